// Package warrenctl is what warrenctl's commands do, apart from their
// command line (cmd/warrenctl): reading the mesh through the Kubernetes API
// and, through port-forwards, the ztunnels' admin and metrics ports; checking
// it (check), summarising it (status, version), showing one ztunnel's
// configuration (config), enrolling namespaces, and installing or removing
// the embedded manifests. Every function takes its clients and writes to an
// io.Writer, so that tests run it against a real or fake API server.
package warrenctl

import "time"

// Where Warren runs, as manifests/ installs it.
const (
	SystemNamespace    = "warren-system"
	ControllerName     = "warren-controller"
	NodeDaemonSetName  = "warren-node"
	NodeSelector       = "app.kubernetes.io/name=warren-node"
	RootsConfigMapName = "warren-ca-root-cert"
	AgentContainer     = "agent"
	ZtunnelContainer   = "ztunnel"
	// ZtunnelAdminPort serves /config_dump and /certs on the node's 127.0.0.1.
	ZtunnelAdminPort = 15000
	// ZtunnelMetricsPort serves /metrics.
	ZtunnelMetricsPort = 15020
	// MeshLabel enrolls a namespace ("enabled") or opts a pod out ("disabled").
	MeshLabel = "warren.dev/mesh"
	// WaypointLabel names a namespace's waypoint.
	WaypointLabel = "warren.dev/use-waypoint"
	// CertWarnBefore is how close to expiry a certificate is a warning.
	CertWarnBefore = 30 * 24 * time.Hour
)

// CRDs are Warren's CustomResourceDefinitions.
var CRDs = []string{"authorizationpolicies.warren.dev", "peerauthentications.warren.dev"}
