// Package nodeagent is Warren's per-node agent.
//
// Its Kubernetes side is the Reconciler: informers on this node's pods and on
// namespaces, the enrollment decision from their labels (Decide), and a
// level-based sync per pod that drives a Dataplane and tells the node's
// ztunnel (Tunnel) which pods are enrolled, with their netns. It also serves
// the warren-cni plugin, which asks for a pod's enrollment before its
// containers start (CNIAdd, CNIDel; the socket server and the plugin's
// installer are package nodeagent/cni).
//
// Its kernel side is Dataplane, the narrow interface the enrollment logic
// drives, and Kernel, its Linux implementation, which loads the eBPF programs
// of package bpf/redirect, attaches them (connect4/connect6/sockops at the
// cgroup2 root, sk_lookup in each enrolled pod's network namespace), pins
// links and maps under a bpffs directory of its own so that a restarted agent
// adopts them without a gap in redirection, and answers the tunnel's question
// "where was this connection going?".
package nodeagent
