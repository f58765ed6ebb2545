package warrenctl

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/warrenmesh/warren/internal/identity"
)

// Status is a check's outcome.
type Status string

// Outcomes; only Fail makes warrenctl check exit non-zero.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// A Result is one check's outcome: Detail says what was seen, Hint (on
// Warn or Fail) what to do.
type Result struct {
	Category string `json:"category"`
	Name     string `json:"name"`
	Status   Status `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
}

func ok(cat, name, detail string) Result { return Result{cat, name, OK, detail, ""} }
func fail(cat, name, detail, hint string) Result {
	return Result{cat, name, Fail, detail, hint}
}
func warn(cat, name, detail, hint string) Result {
	return Result{cat, name, Warn, detail, hint}
}

// WriteResults prints results linkerd-check style, grouped by category in
// order, and reports whether any failed.
func WriteResults(w io.Writer, results []Result) (failed bool) {
	cat := ""
	for _, r := range results {
		if r.Category != cat {
			if cat != "" {
				fmt.Fprintln(w)
			}
			cat = r.Category
			fmt.Fprintln(w, cat)
			fmt.Fprintln(w, strings.Repeat("-", len(cat)))
		}
		mark := map[Status]string{OK: "√", Warn: "‼", Fail: "×"}[r.Status]
		line := mark + " " + r.Name
		if r.Detail != "" {
			line += " (" + r.Detail + ")"
		}
		fmt.Fprintln(w, line)
		if r.Status != OK && r.Hint != "" {
			fmt.Fprintln(w, "    hint: "+r.Hint)
		}
		failed = failed || r.Status == Fail
	}
	var nOK, nWarn, nFail int
	for _, r := range results {
		switch r.Status {
		case OK:
			nOK++
		case Warn:
			nWarn++
		case Fail:
			nFail++
		}
	}
	fmt.Fprintf(w, "\nStatus check results: %d ok, %d warnings, %d failed\n", nOK, nWarn, nFail)
	return failed
}

// MinKernel is the oldest node kernel Warren's eBPF programs load on.
var MinKernel = [2]int{5, 15}

var kernelRE = regexp.MustCompile(`^(\d+)\.(\d+)`)

// KernelAtLeast reports whether a node's kernelVersion ("6.1.0-18-amd64")
// is at least min.
func KernelAtLeast(v string, min [2]int) (bool, error) {
	m := kernelRE.FindStringSubmatch(v)
	if m == nil {
		return false, fmt.Errorf("kernel version %q: not MAJOR.MINOR", v)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > min[0] || (major == min[0] && minor >= min[1]), nil
}

// NodeResults checks what the API says of every node: Linux, and a kernel
// new enough for the eBPF programs.
func NodeResults(nodes []corev1.Node) []Result {
	const cat = "nodes"
	if len(nodes) == 0 {
		return []Result{fail(cat, "the cluster has nodes", "none", "Warren runs one agent per node: add nodes (kubectl get nodes)")}
	}
	var out []Result
	for _, n := range nodes {
		info := n.Status.NodeInfo
		name := "node " + n.Name + " runs Linux with kernel ≥ " + fmt.Sprintf("%d.%d", MinKernel[0], MinKernel[1])
		if info.OperatingSystem != "linux" {
			out = append(out, fail(cat, name, "operating system "+strconv.Quote(info.OperatingSystem), "Warren's node agent runs on Linux nodes only"))
			continue
		}
		good, err := KernelAtLeast(info.KernelVersion, MinKernel)
		switch {
		case err != nil:
			out = append(out, warn(cat, name, err.Error(), "check the node's kernel by hand (uname -r): the eBPF programs need 5.15 or later"))
		case !good:
			out = append(out, fail(cat, name, "kernel "+info.KernelVersion, "upgrade the node's kernel to 5.15 or later, or keep Warren off it"))
		default:
			out = append(out, ok(cat, name, "kernel "+info.KernelVersion))
		}
	}
	return out
}

// InstallAccess is what warrenctl install creates, as (group, resource)
// pairs whose create and patch it needs.
var InstallAccess = []schema.GroupResource{
	{Group: "", Resource: "namespaces"},
	{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"},
	{Group: "", Resource: "serviceaccounts"},
	{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
	{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
	{Group: "rbac.authorization.k8s.io", Resource: "roles"},
	{Group: "rbac.authorization.k8s.io", Resource: "rolebindings"},
	{Group: "", Resource: "services"},
	{Group: "apps", Resource: "deployments"},
	{Group: "apps", Resource: "daemonsets"},
}

// RBACResults asks the API server whether the caller may create what
// install creates.
func RBACResults(ctx context.Context, c *Clients) []Result {
	const cat = "permissions"
	var out []Result
	for _, gr := range InstallAccess {
		name := "can create " + gr.String()
		ssar := &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{
			Namespace: SystemNamespace, Verb: "create", Group: gr.Group, Resource: gr.Resource,
		}}}
		res, err := c.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, ssar, metav1.CreateOptions{})
		switch {
		case err != nil:
			out = append(out, fail(cat, name, short(Explain(err, "review access")), "the API server refused a SelfSubjectAccessReview: check your credentials"))
		case !res.Status.Allowed:
			out = append(out, fail(cat, name, "denied", "install needs cluster-admin or equal: kubectl auth can-i create "+gr.String()+" -n "+SystemNamespace))
		default:
			out = append(out, ok(cat, name, ""))
		}
	}
	return out
}

// CRDResult checks that a CRD (nil if absent) is established.
func CRDResult(name string, crd *unstructured.Unstructured) Result {
	const cat = "warren-crds"
	title := "CRD " + name + " is established"
	if crd == nil {
		return fail(cat, title, "absent", "run warrenctl install (or kubectl apply -k manifests/)")
	}
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return ok(cat, title, "")
		}
	}
	return fail(cat, title, "not established", "kubectl describe crd "+name)
}

// DeploymentResult checks that the controller Deployment (nil if absent)
// is available with all its replicas up to date.
func DeploymentResult(d *appsv1.Deployment) Result {
	const cat = "warren-controller"
	title := "Deployment " + ControllerName + " is available"
	logs := fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", SystemNamespace, ControllerName, SystemNamespace, ControllerName)
	if d == nil {
		return fail(cat, title, "absent", "run warrenctl install")
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	detail := fmt.Sprintf("%d/%d available, %d updated", s.AvailableReplicas, want, s.UpdatedReplicas)
	if s.ObservedGeneration < d.Generation {
		return fail(cat, title, "rollout not yet observed", logs)
	}
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status != corev1.ConditionTrue {
			return fail(cat, title, detail+": "+c.Message, logs)
		}
	}
	if s.AvailableReplicas < want || s.UpdatedReplicas < want {
		return fail(cat, title, detail, logs)
	}
	return ok(cat, title, detail)
}

// DaemonSetResult checks that warren-node (nil if absent) runs, ready and
// up to date, on each of nodes nodes.
func DaemonSetResult(ds *appsv1.DaemonSet, nodes int) Result {
	const cat = "warren-node"
	title := "DaemonSet " + NodeDaemonSetName + " is ready on every node"
	logs := fmt.Sprintf("kubectl -n %s get pods -l %s -o wide; kubectl -n %s logs ds/%s -c agent", SystemNamespace, NodeSelector, SystemNamespace, NodeDaemonSetName)
	if ds == nil {
		return fail(cat, title, "absent", "run warrenctl install")
	}
	s := ds.Status
	detail := fmt.Sprintf("%d/%d nodes ready, %d updated, %d nodes in the cluster", s.NumberReady, s.DesiredNumberScheduled, s.UpdatedNumberScheduled, nodes)
	switch {
	case s.ObservedGeneration < ds.Generation:
		return fail(cat, title, "rollout not yet observed", logs)
	case s.DesiredNumberScheduled < int32(nodes):
		return fail(cat, title, detail, "some nodes get no warren-node pod: check taints and the DaemonSet's tolerations; "+logs)
	case s.NumberReady < s.DesiredNumberScheduled || s.UpdatedNumberScheduled < s.DesiredNumberScheduled || s.NumberUnavailable > 0:
		return fail(cat, title, detail, logs)
	}
	return ok(cat, title, detail)
}

// RootsKey is the roots' key in the warren-ca-root-cert ConfigMap.
const RootsKey = "root-cert.pem"

// RootsResult checks the roots ConfigMap (nil if absent): present, its
// certificates parse and are valid beyond CertWarnBefore.
func RootsResult(cm *corev1.ConfigMap, now time.Time) Result {
	const cat = "warren-ca"
	title := "ConfigMap " + RootsConfigMapName + " holds valid roots"
	logs := fmt.Sprintf("the controller publishes it: kubectl -n %s logs deployment/%s", SystemNamespace, ControllerName)
	if cm == nil {
		return fail(cat, title, "absent", logs)
	}
	certs, err := identity.ParseCertificatesPEM([]byte(cm.Data[RootsKey]))
	if err != nil {
		return fail(cat, title, RootsKey+": "+err.Error(), logs)
	}
	return expiryResult(cat, title, certs, now, "the controller rotates its roots: "+logs)
}

func expiryResult(cat, title string, certs []*x509.Certificate, now time.Time, hint string) Result {
	for _, c := range certs {
		if now.Before(c.NotBefore) {
			return fail(cat, title, c.Subject.String()+" not valid before "+c.NotBefore.UTC().Format(time.RFC3339), "check the clocks of this machine and the nodes")
		}
	}
	t, who := X509Expiry(certs)
	detail := fmt.Sprintf("%d certificate(s), earliest expiry %s", len(certs), t.UTC().Format(time.RFC3339))
	switch {
	case !now.Before(t):
		return fail(cat, title, who+" expired "+t.UTC().Format(time.RFC3339), hint)
	case t.Sub(now) < CertWarnBefore:
		return warn(cat, title, who+" expires in "+Human(t.Sub(now)), hint)
	}
	return ok(cat, title, detail)
}

// ZtunnelProbe is what was read from one node's ztunnel.
type ZtunnelProbe struct {
	Node, Pod   string
	ReadyErr    error // GET :15021/healthz/ready
	Updates     ConfigUpdates
	UpdatesErr  error // GET :15020/metrics
	Certs       []Cert
	CertsErr    error // GET :15000/certs
	ServedPods  int
	DumpErr     error // GET :15000/config_dump
	ServedKnown bool
}

// ZtunnelResults judges one node's probe: ready, configuration acked and
// none refused, certificates valid and not near expiry (NearExpiry).
func ZtunnelResults(p ZtunnelProbe, now time.Time) []Result {
	cat := "ztunnel on " + p.Node
	logs := fmt.Sprintf("kubectl -n %s logs %s -c %s", SystemNamespace, p.Pod, ZtunnelContainer)
	var out []Result
	if p.ReadyErr != nil {
		out = append(out, fail(cat, "ztunnel is ready", short(p.ReadyErr), logs))
	} else {
		out = append(out, ok(cat, "ztunnel is ready", ""))
	}
	switch u := p.Updates; {
	case p.UpdatesErr != nil:
		out = append(out, fail(cat, "configuration from the controller is acked", short(p.UpdatesErr), logs))
	case !u.Found || u.Acked == 0:
		out = append(out, fail(cat, "configuration from the controller is acked", "no update applied yet", "the ztunnel has not applied any configuration: "+logs+"; kubectl -n "+SystemNamespace+" logs deployment/"+ControllerName))
	case u.Nacked > 0:
		out = append(out, warn(cat, "configuration from the controller is acked", fmt.Sprintf("%.0f acked, %.0f refused", u.Acked, u.Nacked), "the ztunnel refused some updates (a nack keeps the previous state): "+logs))
	default:
		out = append(out, ok(cat, "configuration from the controller is acked", fmt.Sprintf("%.0f updates acked", u.Acked)))
	}
	title := "workload certificates are valid"
	switch {
	case p.CertsErr != nil:
		out = append(out, fail(cat, title, short(p.CertsErr), logs))
	case len(p.Certs) == 0:
		out = append(out, ok(cat, title, "none held (no enrolled pods on this node)"))
	default:
		var bad, soon []string
		for _, c := range p.Certs {
			switch {
			case now.Before(c.NotBefore) || !now.Before(c.NotAfter):
				bad = append(bad, c.Identity+" "+CertState(c.NotBefore, c.NotAfter, now))
			case NearExpiry(c.NotBefore, c.NotAfter, now):
				soon = append(soon, c.Identity+" "+CertState(c.NotBefore, c.NotAfter, now))
			}
		}
		switch {
		case len(bad) > 0:
			out = append(out, fail(cat, title, strings.Join(bad, "; "), "the ztunnel renews its certificates from the controller: "+logs))
		case len(soon) > 0:
			out = append(out, warn(cat, title, strings.Join(soon, "; "), "the ztunnel renews its certificates from the controller: "+logs))
		default:
			out = append(out, ok(cat, title, fmt.Sprintf("%d, earliest expiry in %s", len(p.Certs), Human(EarliestExpiry(p.Certs).Sub(now)))))
		}
	}
	return out
}

// ProbeZtunnel reads one node's ztunnel through port-forwards.
func ProbeZtunnel(ctx context.Context, c *Clients, np NodePod) ZtunnelProbe {
	p := ZtunnelProbe{Node: np.Node, Pod: np.Pod.Name}
	ns, pod := np.Pod.Namespace, np.Pod.Name
	_, p.ReadyErr = c.Fetch(ctx, ns, pod, 15021, "/healthz/ready")
	var b []byte
	if b, p.UpdatesErr = c.Fetch(ctx, ns, pod, ZtunnelMetricsPort, "/metrics"); p.UpdatesErr == nil {
		p.Updates, p.UpdatesErr = ParseConfigUpdates(bytes.NewReader(b))
	}
	if b, p.CertsErr = c.Fetch(ctx, ns, pod, ZtunnelAdminPort, "/certs"); p.CertsErr == nil {
		p.Certs, p.CertsErr = ParseCerts(b)
	}
	if b, p.DumpErr = c.Fetch(ctx, ns, pod, ZtunnelAdminPort, "/config_dump"); p.DumpErr == nil {
		var d *ConfigDump
		if d, p.DumpErr = ParseConfigDump(b); p.DumpErr == nil {
			p.ServedPods, p.ServedKnown = len(d.ServedPods), true
		}
	}
	return p
}

// PreChecks are warrenctl check --pre: can Warren be installed here.
func PreChecks(ctx context.Context, c *Clients) []Result {
	const cat = "kubernetes-api"
	v, err := c.Reachable(ctx)
	if err != nil {
		return []Result{fail(cat, "can reach the API server", short(err), "check --kubeconfig/--context and that the cluster is up (kubectl cluster-info)")}
	}
	out := []Result{ok(cat, "can reach the API server", v)}
	out = append(out, RBACResults(ctx, c)...)
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return append(out, fail("nodes", "can list nodes", short(Explain(err, "list nodes")), "warrenctl check needs to read nodes"))
	}
	return append(out, NodeResults(nodes.Items)...)
}

// CRDResource is the customresourcedefinitions resource.
var CRDResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// PostChecks are warrenctl check: is Warren installed and healthy.
func PostChecks(ctx context.Context, c *Clients, now time.Time) []Result {
	const cat = "kubernetes-api"
	v, err := c.Reachable(ctx)
	if err != nil {
		return []Result{fail(cat, "can reach the API server", short(err), "check --kubeconfig/--context and that the cluster is up (kubectl cluster-info)")}
	}
	out := []Result{ok(cat, "can reach the API server", v)}
	if err := c.RequireWarren(ctx); err != nil {
		return append(out, fail("warren", "Warren is installed", short(err), "run warrenctl check --pre, then warrenctl install"))
	}
	// absent maps NotFound to nil; other errors become a failed check.
	absent := func(err error, title, cat string) (bool, *Result) {
		if err == nil {
			return false, nil
		}
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		r := fail(cat, title, short(Explain(err, "read it")), "")
		return true, &r
	}
	for _, name := range CRDs {
		crd, err := c.Dynamic.Resource(CRDResource).Get(ctx, name, metav1.GetOptions{})
		if gone, r := absent(err, "CRD "+name+" is established", "warren-crds"); r != nil {
			out = append(out, *r)
			continue
		} else if gone {
			crd = nil
		}
		out = append(out, CRDResult(name, crd))
	}
	d, err := c.Kube.AppsV1().Deployments(SystemNamespace).Get(ctx, ControllerName, metav1.GetOptions{})
	if gone, r := absent(err, "Deployment "+ControllerName+" is available", "warren-controller"); r != nil {
		out = append(out, *r)
	} else {
		if gone {
			d = nil
		}
		out = append(out, DeploymentResult(d))
	}
	cm, err := c.Kube.CoreV1().ConfigMaps(SystemNamespace).Get(ctx, RootsConfigMapName, metav1.GetOptions{})
	if gone, r := absent(err, "ConfigMap "+RootsConfigMapName+" holds valid roots", "warren-ca"); r != nil {
		out = append(out, *r)
	} else {
		if gone {
			cm = nil
		}
		out = append(out, RootsResult(cm, now))
	}
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return append(out, fail("warren-node", "can list nodes", short(Explain(err, "list nodes")), ""))
	}
	ds, err := c.Kube.AppsV1().DaemonSets(SystemNamespace).Get(ctx, NodeDaemonSetName, metav1.GetOptions{})
	if gone, r := absent(err, "DaemonSet "+NodeDaemonSetName+" is ready on every node", "warren-node"); r != nil {
		out = append(out, *r)
	} else {
		if gone {
			ds = nil
		}
		out = append(out, DaemonSetResult(ds, len(nodes.Items)))
	}
	pods, err := NodePods(ctx, c, "")
	if err != nil {
		return append(out, fail("warren-node", "can list the warren-node pods", short(err), ""))
	}
	for _, np := range pods {
		out = append(out, ZtunnelResults(ProbeZtunnel(ctx, c, np), now)...)
	}
	return out
}
