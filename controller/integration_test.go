package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/enrollment"
	wait "github.com/warrenmesh/warren/internal/eventually"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/kubetest"
)

// env is shared by the integration tests of this package: starting an
// apiserver takes seconds, and each test works in namespaces of its own.
var (
	env     *kubetest.Env
	skipMsg string
)

func TestMain(m *testing.M) {
	flag.Parse()
	// controller-runtime logs through a global before a manager exists.
	ctrllog.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if skipMsg = kubetest.SkipReason(); skipMsg != "" {
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), kubetest.BuildTimeout)
	e, err := kubetest.Start(ctx, "../manifests/crds", "../manifests/gateway-api")
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration tests:", err)
		os.Exit(1)
	}
	env = e
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop apiserver and etcd:", err)
		code = max(code, 1)
	}
	os.Exit(code)
}

func needEnv(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip(skipMsg)
	}
}

func scheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(s), v1alpha1.AddToScheme(s)); err != nil {
		t.Fatal(err)
	}
	return s
}

// testLog logs into the test's output until the test ends, and then drops
// what stray goroutines (controller-runtime's stop procedure) still say:
// writing to a finished test's output panics.
func testLog(t *testing.T) *slog.Logger {
	w := &testWriter{out: t.Output()}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu     sync.Mutex
	out    io.Writer
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		if os.Getenv("WARREN_TEST_LATE_LOGS") != "" {
			return os.Stderr.Write(p)
		}
		return len(p), nil
	}
	return w.out.Write(p)
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// startController runs a manager with the controller until the test ends.
func startController(t *testing.T) (*Controller, client.Client) {
	t.Helper()
	return startControllerWith(t, scheme(t))
}

// startControllerWith is startController with the manager's scheme s.
func startControllerWith(t *testing.T, s *runtime.Scheme) (*Controller, client.Client) {
	t.Helper()
	log := testLog(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 s,
		Logger:                 logr.FromSlogHandler(log.Handler()),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(mgr, Config{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	select {
	case <-c.Published():
	case err := <-done:
		t.Fatalf("manager stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no model after 30 s")
	}
	cl, err := client.New(env.Config, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c, cl
}

// eventually polls f until it returns nil or 20 s pass.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	wait.NoError(t, what, 20*time.Second, f)
}

// createNamespace creates a namespace, or leaves the one an earlier test
// created.
func createNamespace(t *testing.T, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func TestCRDValidation(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	dyn := dynamic.NewForConfigOrDie(env.Config)
	createNamespace(t, cs, "crd", nil)

	obj := func(kind string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "warren.dev/v1alpha1", "kind": kind,
			"metadata": map[string]any{"generateName": "t-"}, "spec": spec,
		}}
	}
	rule := func(r map[string]any) map[string]any {
		return map[string]any{"action": "ALLOW", "rules": []any{r}}
	}
	for _, tc := range []struct {
		name, kind, resource string
		spec                 map[string]any
		want                 []string // substrings of the error; none: accepted
	}{
		{"valid allow", "AuthorizationPolicy", "authorizationpolicies", map[string]any{"action": "ALLOW",
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"rules": []any{map[string]any{"from": []any{map[string]any{"principals": []any{"spiffe://cluster.local/ns/a/sa/b"}, "namespaces": []any{"a"}}},
				"to": []any{map[string]any{"ports": []any{80, 443}}}}}}, nil},
		{"valid peer authentication", "PeerAuthentication", "peerauthentications", map[string]any{"mtls": map[string]any{"mode": "STRICT"}}, nil},
		{"bad action", "AuthorizationPolicy", "authorizationpolicies", map[string]any{"action": "AUDIT"},
			[]string{`spec.action: Unsupported value: "AUDIT"`, `"ALLOW"`, `"DENY"`}},
		{"no action", "AuthorizationPolicy", "authorizationpolicies", map[string]any{}, []string{"spec.action: Required value"}},
		{"L7 methods", "AuthorizationPolicy", "authorizationpolicies", rule(map[string]any{"to": []any{map[string]any{"methods": []any{"GET"}}}}),
			[]string{"spec.rules[0].to[0].methods", "methods is an L7 field that needs a waypoint"}},
		{"L7 paths", "AuthorizationPolicy", "authorizationpolicies", rule(map[string]any{"to": []any{map[string]any{"ports": []any{80}, "paths": []any{"/admin"}}}}),
			[]string{"spec.rules[0].to[0].paths", "paths is an L7 field that needs a waypoint"}},
		{"port out of range", "AuthorizationPolicy", "authorizationpolicies", rule(map[string]any{"to": []any{map[string]any{"ports": []any{70000}}}}),
			[]string{"spec.rules[0].to[0].ports[0]", "65535"}},
		{"bad principal", "AuthorizationPolicy", "authorizationpolicies", rule(map[string]any{"from": []any{map[string]any{"principals": []any{"cluster.local/ns/a/sa/b"}}}}),
			[]string{"spec.rules[0].from[0].principals[0]", "should match"}},
		{"empty source", "AuthorizationPolicy", "authorizationpolicies", rule(map[string]any{"from": []any{map[string]any{}}}),
			[]string{"spec.rules[0].from[0]", "a source needs principals or namespaces"}},
		{"empty selector", "AuthorizationPolicy", "authorizationpolicies", map[string]any{"action": "DENY", "selector": map[string]any{"matchLabels": map[string]any{}}},
			[]string{"spec.selector.matchLabels", "should have at least 1 properties"}},
		{"bad mode", "PeerAuthentication", "peerauthentications", map[string]any{"mtls": map[string]any{"mode": "DISABLE"}},
			[]string{`spec.mtls.mode: Unsupported value: "DISABLE"`, `"STRICT"`, `"PERMISSIVE"`}},
		{"no mtls", "PeerAuthentication", "peerauthentications", map[string]any{}, []string{"spec.mtls: Required value"}},
		{"unknown field", "PeerAuthentication", "peerauthentications", map[string]any{"mtls": map[string]any{"mode": "STRICT"}, "portLevelMtls": map[string]any{}},
			[]string{`unknown field "spec.portLevelMtls"`}},
		{"unknown nested field", "AuthorizationPolicy", "authorizationpolicies", rule(map[string]any{"when": []any{}}),
			[]string{`unknown field "spec.rules[0].when"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dyn.Resource(kubetest.GVR(tc.resource)).Namespace("crd").Create(ctx, obj(tc.kind, tc.spec),
				metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			t.Logf("refused: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func condOf(st v1alpha1.PolicyStatus) string {
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAccepted)
	if c == nil {
		return "none"
	}
	return fmt.Sprintf("%s/%s gen %d", c.Status, c.Reason, c.ObservedGeneration)
}

func TestStatusConditions(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	_, cl := startController(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNamespace(t, cs, "status", nil)

	web := &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}}
	allow := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "status", Name: "allow"},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow, Rules: []v1alpha1.Rule{{}}}}
	deny := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "status", Name: "deny"},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionDeny, Selector: web,
			Rules: []v1alpha1.Rule{{To: []v1alpha1.Destination{{Ports: []int32{22}}}}}}}
	badSel := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "status", Name: "bad-selector"},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow, Selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"-x": "y"}}}}
	first := &v1alpha1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "status", Name: "first"},
		Spec: v1alpha1.PeerAuthenticationSpec{MTLS: v1alpha1.MutualTLS{Mode: v1alpha1.ModeStrict}}}
	for _, o := range []client.Object{allow, deny, badSel, first} {
		if err := cl.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// Creation timestamps have a one-second resolution; the conflict must
	// be decided by age, not by name.
	time.Sleep(1100 * time.Millisecond)
	second := &v1alpha1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "status", Name: "a-second"},
		Spec: v1alpha1.PeerAuthenticationSpec{MTLS: v1alpha1.MutualTLS{Mode: v1alpha1.ModePermissive}}}
	if err := cl.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "status", Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "n1", AutomountServiceAccountToken: new(bool), Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	createSA(t, cs, "status", "default")
	if err := cl.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}

	check := func(obj client.Object, status func() v1alpha1.PolicyStatus, want string) {
		t.Helper()
		eventually(t, obj.GetName(), func() error {
			if err := cl.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
				return err
			}
			if got := condOf(status()); !strings.HasPrefix(got, want) {
				return fmt.Errorf("condition %s, want %s", got, want)
			}
			return nil
		})
	}
	check(allow, func() v1alpha1.PolicyStatus { return allow.Status }, "True/OverlapsDeny gen 1")
	check(deny, func() v1alpha1.PolicyStatus { return deny.Status }, "True/Accepted gen 1")
	check(badSel, func() v1alpha1.PolicyStatus { return badSel.Status }, "False/Invalid gen 1")
	check(first, func() v1alpha1.PolicyStatus { return first.Status }, "True/Accepted gen 1")
	check(second, func() v1alpha1.PolicyStatus { return second.Status }, "False/Conflicted gen 1")
	if c := meta.FindStatusCondition(allow.Status.Conditions, v1alpha1.ConditionAccepted); !strings.Contains(c.Message, "status/deny") {
		t.Errorf("OverlapsDeny message %q does not name the DENY policy", c.Message)
	}
	if c := meta.FindStatusCondition(badSel.Status.Conditions, v1alpha1.ConditionAccepted); !strings.Contains(c.Message, "spec.selector.matchLabels") {
		t.Errorf("Invalid message %q does not name the field", c.Message)
	}

	// A new generation is judged again: the deny policy now selects nothing
	// that the allow policy also selects.
	deny.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "none"}}
	if err := cl.Update(ctx, deny); err != nil {
		t.Fatal(err)
	}
	check(deny, func() v1alpha1.PolicyStatus { return deny.Status }, "True/Accepted gen 2")
	check(allow, func() v1alpha1.PolicyStatus { return allow.Status }, "True/Accepted gen 1")
}

func createSA(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// runningPod creates a pod on node and marks it Running, as a kubelet would.
func runningPod(t *testing.T, cs kubernetes.Interface, ns, name, sa, node, ip string) *corev1.Pod {
	t.Helper()
	return runningPodLabelled(t, cs, ns, name, sa, node, ip, nil)
}

func runningPodLabelled(t *testing.T, cs kubernetes.Interface, ns, name, sa, node, ip string, labels map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	p, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func podToken(t *testing.T, cs kubernetes.Interface, p *corev1.Pod) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(context.Background(), p.Spec.ServiceAccountName, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func csrFor(t *testing.T, id string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestCANodeAuthorization(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	c, _ := startController(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "n1", "n2")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createNamespace(t, cs, "shop", map[string]string{enrollment.Label: enrollment.Enabled})
	createSA(t, cs, model.DefaultSystemNamespace, "ztunnel")
	createSA(t, cs, "shop", "web")
	createSA(t, cs, "shop", "db")
	zt1 := runningPod(t, cs, model.DefaultSystemNamespace, "ztunnel-n1", "ztunnel", "n1", "10.250.0.11")
	zt2 := runningPod(t, cs, model.DefaultSystemNamespace, "ztunnel-n2", "ztunnel", "n2", "10.250.0.12")
	runningPod(t, cs, "shop", "web", "web", "n1", "10.244.1.5")
	runningPod(t, cs, "shop", "db", "db", "n2", "10.244.2.5")
	webApp := runningPod(t, cs, "shop", "web-2", "web", "n1", "10.244.1.6")

	secrets := cs.CoreV1().Secrets(model.DefaultSystemNamespace)
	authority, err := ca.LoadOrCreate(ctx, secrets, ca.DefaultSecretName, ca.Options{}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	// A second replica loads the same root instead of making its own.
	again, err := ca.LoadOrCreate(ctx, secrets, ca.DefaultSecretName, ca.Options{}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if string(again.RootsPEM()) != string(authority.RootsPEM()) {
		t.Fatal("second LoadOrCreate made another root")
	}

	signer := &ca.Signer{
		CA:      authority,
		Authn:   &ca.TokenReviewer{Reviews: cs.AuthenticationV1().TokenReviews()},
		Authz:   ca.ModelAuthorizer{Model: c.Model},
		Callers: []string{model.DefaultSystemNamespace + "/ztunnel"},
		Log:     testLog(t),
	}
	if err := signer.Validate(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "model has the scheduled pods", func() error {
		m := c.Model()
		if !m.Scheduled("n1", identity.New("shop", "web")) || !m.Scheduled("n2", identity.New("shop", "db")) {
			return errors.New("not yet")
		}
		return nil
	})

	tok1, tok2 := podToken(t, cs, zt1), podToken(t, cs, zt2)
	for _, tc := range []struct {
		name, token, id string
		want            ca.Reason
	}{
		{"node 1 gets web", tok1, "spiffe://cluster.local/ns/shop/sa/web", ""},
		{"node 1 refused db, which runs on node 2", tok1, "spiffe://cluster.local/ns/shop/sa/db", ca.ReasonNotOnNode},
		{"node 2 gets db", tok2, "spiffe://cluster.local/ns/shop/sa/db", ""},
		{"node 2 refused web", tok2, "spiffe://cluster.local/ns/shop/sa/web", ca.ReasonNotOnNode},
		{"workload's own token refused", podToken(t, cs, webApp), "spiffe://cluster.local/ns/shop/sa/web", ca.ReasonCallerNotAllowed},
		{"garbage token", "not-a-token", "spiffe://cluster.local/ns/shop/sa/web", ca.ReasonUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := signer.SignCSR(ctx, tc.token, csrFor(t, tc.id))
			if got := ca.ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if tc.want != "" {
				return
			}
			var certs []*x509.Certificate
			for b, rest := pem.Decode(chain); b != nil; b, rest = pem.Decode(rest) {
				cert, err := x509.ParseCertificate(b.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				certs = append(certs, cert)
			}
			if got, err := identity.VerifyChain(certs, authority.Roots(), x509.ExtKeyUsageClientAuth, time.Now()); err != nil || got.String() != tc.id {
				t.Errorf("verify: %v %v", got, err)
			}
		})
	}

	// Once the pod on node 2 stops, node 2 may no longer get its identity.
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "db", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "db refused after its pod is gone", func() error {
		_, err := signer.SignCSR(ctx, tok2, csrFor(t, "spiffe://cluster.local/ns/shop/sa/db"))
		if ca.ReasonOf(err) != ca.ReasonNotOnNode {
			return fmt.Errorf("got %v", err)
		}
		return nil
	})
}

func createNodes(t *testing.T, cs kubernetes.Interface, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := cs.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}
