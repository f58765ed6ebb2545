package warrenctl

import (
	"context"
	"runtime/debug"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Version is set at link time (-ldflags "-X github.com/warrenmesh/warren/internal/warrenctl.Version=v1.2.3");
// ClientVersion falls back to the build info.
var Version = ""

// ClientVersion is this binary's version: Version, else the main module's
// version, else its VCS revision (with "-dirty" for a modified tree).
func ClientVersion() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty, _ = strconv.ParseBool(s.Value)
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// Versions are warrenctl version's data.
type Versions struct {
	Client     string        `json:"client"`
	Server     string        `json:"kubernetes,omitempty"`
	Controller []string      `json:"controller,omitempty"`
	Nodes      []NodeVersion `json:"nodes,omitempty"`
	// Unreachable says why the cluster part is missing.
	Unreachable string `json:"unreachable,omitempty"`
}

// NodeVersion is one node's images.
type NodeVersion struct {
	Node    string `json:"node"`
	Agent   string `json:"agent"`
	Ztunnel string `json:"ztunnel"`
}

// Header implements Table.
func (Versions) Header() []string { return []string{"COMPONENT", "WHERE", "VERSION"} }

// Rows implements Table.
func (v Versions) Rows() [][]string {
	rows := [][]string{{"warrenctl", "client", v.Client}}
	if v.Unreachable != "" {
		return append(rows, []string{"cluster", "", "unreachable: " + v.Unreachable})
	}
	rows = append(rows, []string{"kubernetes", "api server", v.Server})
	for _, c := range v.Controller {
		rows = append(rows, []string{"controller", ControllerName, ImageTag(c)})
	}
	if len(v.Controller) == 0 {
		rows = append(rows, []string{"controller", ControllerName, "not installed"})
	}
	for _, n := range v.Nodes {
		rows = append(rows, []string{"agent", n.Node, ImageTag(n.Agent)}, []string{"ztunnel", n.Node, ImageTag(n.Ztunnel)})
	}
	return rows
}

// ClusterVersions is the client's version and, if c reaches a cluster,
// the API server's, the controller's images and each node's.
func ClusterVersions(ctx context.Context, c *Clients) Versions {
	v := Versions{Client: ClientVersion()}
	if c == nil {
		v.Unreachable = "no kubeconfig"
		return v
	}
	sv, err := c.Reachable(ctx)
	if err != nil {
		v.Unreachable = short(err)
		return v
	}
	v.Server = sv
	if d, err := c.Kube.AppsV1().Deployments(SystemNamespace).Get(ctx, ControllerName, metav1.GetOptions{}); err == nil {
		for _, ct := range d.Spec.Template.Spec.Containers {
			v.Controller = append(v.Controller, ct.Image)
		}
	}
	if nps, err := NodePods(ctx, c, ""); err == nil {
		for _, np := range nps {
			v.Nodes = append(v.Nodes, NodeVersion{Node: np.Node, Agent: ContainerImage(np.Pod, AgentContainer), Ztunnel: ContainerImage(np.Pod, ZtunnelContainer)})
		}
	}
	return v
}
