package warrenctl

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshStatus is warrenctl status: the mesh per node and per namespace.
type MeshStatus struct {
	Nodes      []NodeStatus      `json:"nodes"`
	Namespaces []NamespaceStatus `json:"namespaces"`
}

// NodeStatus is one node's warren-node pod and ztunnel.
type NodeStatus struct {
	Node         string `json:"node"`
	Pod          string `json:"pod"`
	AgentImage   string `json:"agentImage"`
	ZtunnelImage string `json:"ztunnelImage"`
	// EnrolledPods are the running pods of enrolled namespaces on the node
	// (as the API says; not opted out); ServedPods those its ztunnel serves.
	EnrolledPods int  `json:"enrolledPods"`
	ServedPods   *int `json:"servedPods,omitempty"`
	// ConfigUpdates are the acked and refused updates (the ztunnel exposes
	// no config version).
	ConfigAcked  *float64  `json:"configAcked,omitempty"`
	ConfigNacked *float64  `json:"configNacked,omitempty"`
	CertExpiry   time.Time `json:"earliestCertExpiry,omitzero"`
	// Errors are what could not be read from the ztunnel.
	Errors []string `json:"errors,omitempty"`
}

// NamespaceStatus is one namespace's enrollment.
type NamespaceStatus struct {
	Namespace string `json:"namespace"`
	Enrolled  bool   `json:"enrolled"`
	Waypoint  string `json:"waypoint,omitempty"`
	Pods      int    `json:"pods"`
}

// Header implements Table (nodes, then namespaces, see Rows).
func (MeshStatus) Header() []string {
	return []string{"NODE", "AGENT", "ZTUNNEL", "ENROLLED PODS", "SERVED", "CONFIG ACKED/NACKED", "EARLIEST CERT EXPIRY"}
}

// Rows implements Table.
func (s MeshStatus) Rows() [][]string {
	var rows [][]string
	for _, n := range s.Nodes {
		served, acked, expiry := "", "", ""
		if n.ServedPods != nil {
			served = strconv.Itoa(*n.ServedPods)
		}
		if n.ConfigAcked != nil {
			acked = strconv.FormatFloat(*n.ConfigAcked, 'f', 0, 64) + "/" + strconv.FormatFloat(*n.ConfigNacked, 'f', 0, 64)
		}
		if !n.CertExpiry.IsZero() {
			expiry = n.CertExpiry.UTC().Format(time.RFC3339)
		}
		rows = append(rows, []string{n.Node, ImageTag(n.AgentImage), ImageTag(n.ZtunnelImage), strconv.Itoa(n.EnrolledPods), served, acked, expiry})
	}
	return rows
}

// NamespaceTable is the namespaces part of a status as a Table.
type NamespaceTable []NamespaceStatus

// Header implements Table.
func (NamespaceTable) Header() []string { return []string{"NAMESPACE", "ENROLLED", "WAYPOINT", "PODS"} }

// Rows implements Table.
func (t NamespaceTable) Rows() [][]string {
	var rows [][]string
	for _, n := range t {
		e := "no"
		if n.Enrolled {
			e = "yes"
		}
		rows = append(rows, []string{n.Namespace, e, n.Waypoint, strconv.Itoa(n.Pods)})
	}
	return rows
}

// ImageTag is an image reference's tag or digest ("repo:tag" -> "tag").
func ImageTag(image string) string {
	if i := strings.LastIndex(image, "@"); i >= 0 {
		return image[i+1:]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	if image == "" {
		return ""
	}
	return "latest"
}

// ContainerImage is the image of the pod's container name.
func ContainerImage(p *corev1.Pod, name string) string {
	for _, c := range p.Spec.Containers {
		if c.Name == name {
			return c.Image
		}
	}
	return ""
}

// Enrolled reports whether a pod of a namespace with labels nsLabels is
// in the mesh: namespace enabled, pod not opted out, not host-network.
func Enrolled(nsLabels map[string]string, p *corev1.Pod) bool {
	return nsLabels[MeshLabel] == "enabled" && p.Labels[MeshLabel] != "disabled" && !p.Spec.HostNetwork &&
		p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil
}

// BuildStatus computes the status from the API's namespaces, pods and
// warren-node pods, and each node's probe (by node; may lack nodes).
func BuildStatus(nss []corev1.Namespace, pods []corev1.Pod, nodePods []NodePod, probes map[string]ZtunnelProbe) MeshStatus {
	labels := map[string]map[string]string{}
	var s MeshStatus
	perNS := map[string]int{}
	for _, ns := range nss {
		labels[ns.Name] = ns.Labels
	}
	perNode := map[string]int{}
	for i := range pods {
		p := &pods[i]
		if Enrolled(labels[p.Namespace], p) {
			perNode[p.Spec.NodeName]++
			perNS[p.Namespace]++
		}
	}
	for _, ns := range nss {
		s.Namespaces = append(s.Namespaces, NamespaceStatus{
			Namespace: ns.Name, Enrolled: ns.Labels[MeshLabel] == "enabled", Waypoint: ns.Labels[WaypointLabel], Pods: perNS[ns.Name],
		})
	}
	sort.Slice(s.Namespaces, func(i, j int) bool { return s.Namespaces[i].Namespace < s.Namespaces[j].Namespace })
	for _, np := range nodePods {
		n := NodeStatus{
			Node: np.Node, Pod: np.Pod.Name,
			AgentImage: ContainerImage(np.Pod, AgentContainer), ZtunnelImage: ContainerImage(np.Pod, ZtunnelContainer),
			EnrolledPods: perNode[np.Node],
		}
		if p, ok := probes[np.Node]; ok {
			if p.ServedKnown {
				served := p.ServedPods
				n.ServedPods = &served
			}
			if p.UpdatesErr == nil {
				a, r := p.Updates.Acked, p.Updates.Nacked
				n.ConfigAcked, n.ConfigNacked = &a, &r
			}
			if p.CertsErr == nil {
				n.CertExpiry = EarliestExpiry(p.Certs)
			}
			for _, err := range []error{p.DumpErr, p.UpdatesErr, p.CertsErr} {
				if err != nil {
					n.Errors = append(n.Errors, short(err))
				}
			}
		}
		s.Nodes = append(s.Nodes, n)
	}
	return s
}

// ReadStatus reads the cluster and every ztunnel (probe false: the API only).
func ReadStatus(ctx context.Context, c *Clients, probe bool) (MeshStatus, error) {
	if _, err := c.Reachable(ctx); err != nil {
		return MeshStatus{}, err
	}
	if err := c.RequireWarren(ctx); err != nil {
		return MeshStatus{}, err
	}
	nss, err := c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return MeshStatus{}, Explain(err, "list namespaces")
	}
	pods, err := c.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return MeshStatus{}, Explain(err, "list pods")
	}
	nodePods, err := NodePods(ctx, c, "")
	if err != nil {
		return MeshStatus{}, err
	}
	probes := map[string]ZtunnelProbe{}
	if probe {
		for _, np := range nodePods {
			probes[np.Node] = ProbeZtunnel(ctx, c, np)
		}
	}
	return BuildStatus(nss.Items, pods.Items, nodePods, probes), nil
}

// WriteStatus prints a status as two tables, nodes then namespaces, and
// the errors met reading ztunnels.
func WriteStatus(w io.Writer, s MeshStatus) error {
	if err := WriteTable(w, s.Header(), s.Rows()); err != nil {
		return err
	}
	for _, n := range s.Nodes {
		for _, e := range n.Errors {
			fmt.Fprintf(w, "  %s: %s\n", n.Node, e)
		}
	}
	fmt.Fprintln(w)
	return WriteTable(w, NamespaceTable(nil).Header(), NamespaceTable(s.Namespaces).Rows())
}
