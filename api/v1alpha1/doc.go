// Package v1alpha1 holds Warren's custom resources in the warren.dev/v1alpha1
// API group: AuthorizationPolicy (L4 allow and deny rules for enrolled
// workloads) and PeerAuthentication (whether a workload accepts plaintext).
//
// The deepcopy functions and the CRD manifests under manifests/crds are
// generated from the markers in this package by controller-gen (pinned in
// go.mod); run `make generate` after any change here.
//
// +kubebuilder:object:generate=true
// +groupName=warren.dev
package v1alpha1

//go:generate go tool controller-gen object paths=.
//go:generate go tool controller-gen crd paths=. output:crd:dir=../../manifests/crds
