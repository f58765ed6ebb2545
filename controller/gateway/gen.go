package gateway

// The Gateway API's standard CRDs, as the module this tree requires ships
// them: manifests/gateway-api holds a copy that `kubectl apply -k
// manifests/` installs, so the CRDs and the types the controller is
// compiled against are always the same bundle version.
//go:generate go run copycrds.go ../../manifests/gateway-api
