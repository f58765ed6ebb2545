// Package localcluster runs a real multi-node Kubernetes on one Linux machine without Docker.
//
// The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) runs in its
// own network namespace; each node runs containerd, kubelet and kube-proxy in its own network,
// mount and UTS namespace, with its own /etc/cni/net.d, /opt/cni/bin, /var/lib/kubelet, /run/netns,
// /run/warren and bpffs, so that DaemonSet hostPaths are per node as on a real cluster. Pod CIDRs
// are routed between nodes without NAT. Kubernetes, containerd and CoreDNS are built from the Go
// module proxy into a cache folder and reused; container images are built from the project's own
// static Go binaries with go-containerregistry and imported into every node.
//
// Everything the cluster starts runs in cgroups under /warren-cluster, with pid files, so that
// Down stops only what Up started and leaves no process, namespace, mount or cgroup behind.
package localcluster
