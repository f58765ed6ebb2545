// Package nodeagent is Warren's per-node agent. This part is its kernel side:
// Dataplane, the narrow interface the enrollment logic drives, and Kernel,
// its Linux implementation, which loads the eBPF programs of package
// bpf/redirect, attaches them (connect4/connect6/sockops at the cgroup2 root,
// sk_lookup in each enrolled pod's network namespace), pins links and maps
// under a bpffs directory of its own so that a restarted agent adopts them
// without a gap in redirection, and answers the tunnel's question "where was
// this connection going?".
package nodeagent
