package warrenctl

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/warrenmesh/warren/internal/podforward"
)

// A Fetcher reads an HTTP path from a port of a pod.
type Fetcher func(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error)

// FetchThroughForward reads through a port-forward to the pod (the
// ztunnel's ports are on the node's loopback; the pod is host-network, so
// the kubelet's forward reaches them).
func FetchThroughForward(cfg *rest.Config) Fetcher {
	return func(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error) {
		fwd, err := podforward.Open(ctx, cfg, namespace, pod, port)
		if err != nil {
			return nil, err
		}
		defer fwd.Close()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+fwd.Addr+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s on %s/%s:%d: %s", path, namespace, pod, port, resp.Status)
		}
		return b, nil
	}
}

// ConfigDump is the part of a ztunnel's /config_dump that warrenctl shows
// (ztunnel/admin.go and ztunnel.Config; decoded leniently, so that fields
// added there do not break an older warrenctl).
type ConfigDump struct {
	Config struct {
		Node      string         `json:"node"`
		Pods      []DumpWorkload `json:"pods"`
		Workloads []DumpWorkload `json:"workloads"`
		Services  []DumpService  `json:"services"`
		Policies  []DumpPolicy   `json:"policies"`
	} `json:"config"`
	ServedPods []string `json:"servedPods"`
}

// DumpWorkload is a workload (or a local pod) in a config dump.
type DumpWorkload struct {
	Name           string   `json:"name"`
	Namespace      string   `json:"namespace"`
	ServiceAccount string   `json:"serviceAccount,omitempty"`
	IPs            []string `json:"ips"`
	Node           string   `json:"node,omitempty"`
	Enrolled       bool     `json:"enrolled"`
	UID            string   `json:"uid,omitempty"`
	Local          bool     `json:"local"`
}

// DumpService is a service in a config dump.
type DumpService struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	VIPs      []string `json:"vips"`
	Ports     []struct {
		Port           uint16 `json:"port"`
		TargetPort     uint16 `json:"targetPort,omitempty"`
		TargetPortName string `json:"targetPortName,omitempty"`
	} `json:"ports"`
	Endpoints []struct {
		IP    string `json:"ip"`
		Ready bool   `json:"ready"`
	} `json:"endpoints"`
}

// DumpPolicy is an authorization policy in a config dump.
type DumpPolicy struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Selector  map[string]string `json:"selector,omitempty"`
	Action    string            `json:"action"`
	Rules     []json.RawMessage `json:"rules,omitempty"`
}

// Cert is one entry of a ztunnel's /certs.
type Cert struct {
	Identity  string    `json:"identity"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

// ParseConfigDump decodes /config_dump. The dump holds key material
// (certs, caKey) in some modes: only the fields above are kept.
func ParseConfigDump(b []byte) (*ConfigDump, error) {
	var d ConfigDump
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("config_dump: %w", err)
	}
	for i := range d.Config.Pods {
		d.Config.Pods[i].Local = true
	}
	return &d, nil
}

// ParseCerts decodes /certs.
func ParseCerts(b []byte) ([]Cert, error) {
	var cs []Cert
	if err := json.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return cs, nil
}

// ConfigUpdates are a ztunnel's warren_ztunnel_config_updates_total counters.
// The ztunnel does not expose the version it last applied (neither
// /config_dump nor its metrics carry it), so acked and nacked counts are
// what "config acked" can be judged by.
type ConfigUpdates struct {
	Acked, Nacked float64
	Found         bool
}

// ParseConfigUpdates reads the counters from Prometheus text exposition.
func ParseConfigUpdates(r io.Reader) (ConfigUpdates, error) {
	var u ConfigUpdates
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "warren_ztunnel_config_updates_total{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		fields := strings.Fields(line[end+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return u, fmt.Errorf("metrics: %q: %w", line, err)
		}
		labels := line[:end]
		switch {
		case strings.Contains(labels, `result="acked"`):
			u.Acked += v
			u.Found = true
		case strings.Contains(labels, `result="nacked"`):
			u.Nacked += v
			u.Found = true
		}
	}
	return u, sc.Err()
}

// NodePod is the warren-node pod of a node.
type NodePod struct {
	Node string
	Pod  *corev1.Pod
}

// NodePods lists the warren-node pods, one per node (the newest running one
// during a rollout's surge), sorted by node; node "" picks all.
func NodePods(ctx context.Context, c *Clients, node string) ([]NodePod, error) {
	opts := metav1.ListOptions{LabelSelector: NodeSelector}
	if node != "" {
		opts.FieldSelector = "spec.nodeName=" + node
	}
	pods, err := c.Kube.CoreV1().Pods(SystemNamespace).List(ctx, opts)
	if err != nil {
		return nil, Explain(err, "list the warren-node pods")
	}
	byNode := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Spec.NodeName == "" {
			continue
		}
		cur := byNode[p.Spec.NodeName]
		if cur == nil || better(p, cur) {
			byNode[p.Spec.NodeName] = p
		}
	}
	out := make([]NodePod, 0, len(byNode))
	for n, p := range byNode {
		out = append(out, NodePod{Node: n, Pod: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

func better(p, than *corev1.Pod) bool {
	pr, tr := p.Status.Phase == corev1.PodRunning, than.Status.Phase == corev1.PodRunning
	if pr != tr {
		return pr
	}
	return than.CreationTimestamp.Before(&p.CreationTimestamp)
}

// PickNodePod returns the node's warren-node pod; node may be empty when
// the cluster has one node.
func PickNodePod(ctx context.Context, c *Clients, node string) (*corev1.Pod, error) {
	pods, err := NodePods(ctx, c, node)
	if err != nil {
		return nil, err
	}
	switch {
	case len(pods) == 0 && node != "":
		return nil, fmt.Errorf("no warren-node pod on node %q: see kubectl get nodes, and kubectl -n %s get pods -l %s -o wide", node, SystemNamespace, NodeSelector)
	case len(pods) == 0:
		return nil, fmt.Errorf("no warren-node pods in %s: is Warren installed? (warrenctl check)", SystemNamespace)
	case len(pods) > 1 && node == "":
		names := make([]string, len(pods))
		for i, p := range pods {
			names[i] = p.Node
		}
		return nil, fmt.Errorf("%d nodes run a ztunnel: pick one with --node (%s)", len(pods), strings.Join(names, ", "))
	}
	return pods[0].Pod, nil
}

// EarliestExpiry is the soonest NotAfter of certs, or the zero time.
func EarliestExpiry(certs []Cert) time.Time {
	var t time.Time
	for _, c := range certs {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// X509Expiry is the soonest NotAfter of certs, and its subject.
func X509Expiry(certs []*x509.Certificate) (time.Time, string) {
	var t time.Time
	var who string
	for _, c := range certs {
		if t.IsZero() || c.NotAfter.Before(t) {
			t, who = c.NotAfter, c.Subject.String()
		}
	}
	return t, who
}
