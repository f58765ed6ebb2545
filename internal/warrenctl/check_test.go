package warrenctl

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or writes it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestKernelAtLeast(t *testing.T) {
	for v, want := range map[string]bool{
		"5.15.0-91-generic": true, "6.1.0-18-amd64": true, "5.14.21": false, "4.19.0": false, "10.0": true, "5.15": true,
	} {
		got, err := KernelAtLeast(v, MinKernel)
		if err != nil || got != want {
			t.Errorf("KernelAtLeast(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	if _, err := KernelAtLeast("rolling", MinKernel); err == nil {
		t.Error(`"rolling" parsed`)
	}
}

func node(name, os, kernel string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{OperatingSystem: os, KernelVersion: kernel}}}
}

func statuses(rs []Result) string {
	var s []string
	for _, r := range rs {
		s = append(s, string(r.Status))
	}
	return strings.Join(s, ",")
}

func TestNodeResults(t *testing.T) {
	rs := NodeResults([]corev1.Node{node("a", "linux", "6.1.0"), node("b", "linux", "5.10.0"), node("c", "windows", "10.0"), node("d", "linux", "weird")})
	if got := statuses(rs); got != "ok,fail,fail,warn" {
		t.Errorf("statuses %s", got)
	}
	if rs[1].Hint == "" || !strings.Contains(rs[1].Detail, "5.10.0") {
		t.Errorf("old kernel: %+v", rs[1])
	}
	if got := statuses(NodeResults(nil)); got != "fail" {
		t.Errorf("no nodes: %s", got)
	}
}

func TestDeploymentResult(t *testing.T) {
	two := int32(2)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: 3}, Spec: appsv1.DeploymentSpec{Replicas: &two}}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 3, AvailableReplicas: 2, UpdatedReplicas: 2}
	if r := DeploymentResult(d); r.Status != OK {
		t.Errorf("available: %+v", r)
	}
	d.Status.AvailableReplicas = 1
	if r := DeploymentResult(d); r.Status != Fail || !strings.Contains(r.Hint, "kubectl -n warren-system logs deployment/warren-controller") {
		t.Errorf("1/2: %+v", r)
	}
	d.Status.AvailableReplicas, d.Status.ObservedGeneration = 2, 2
	if r := DeploymentResult(d); r.Status != Fail {
		t.Errorf("old generation: %+v", r)
	}
	if r := DeploymentResult(nil); r.Status != Fail || !strings.Contains(r.Hint, "warrenctl install") {
		t.Errorf("absent: %+v", r)
	}
}

func TestDaemonSetResult(t *testing.T) {
	ds := &appsv1.DaemonSet{Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: 3, UpdatedNumberScheduled: 3}}
	if r := DaemonSetResult(ds, 3); r.Status != OK {
		t.Errorf("ready: %+v", r)
	}
	if r := DaemonSetResult(ds, 4); r.Status != Fail || !strings.Contains(r.Hint, "taints") {
		t.Errorf("a node without a pod: %+v", r)
	}
	ds.Status.NumberReady = 2
	if r := DaemonSetResult(ds, 3); r.Status != Fail || !strings.Contains(r.Detail, "2/3") {
		t.Errorf("one not ready: %+v", r)
	}
}

func TestCRDResult(t *testing.T) {
	crd := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"conditions": []any{
		map[string]any{"type": "NamesAccepted", "status": "True"},
		map[string]any{"type": "Established", "status": "True"},
	}}}}
	if r := CRDResult("x.warren.dev", crd); r.Status != OK {
		t.Errorf("established: %+v", r)
	}
	crd.Object["status"] = map[string]any{}
	if r := CRDResult("x.warren.dev", crd); r.Status != Fail {
		t.Errorf("not established: %+v", r)
	}
	if r := CRDResult("x.warren.dev", nil); r.Status != Fail {
		t.Errorf("absent: %+v", r)
	}
}

// certPEM makes a self-signed certificate valid from nb to na.
func certPEM(t *testing.T, cn string, nb, na time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestRootsResult(t *testing.T) {
	day := 24 * time.Hour
	cm := func(pems ...[]byte) *corev1.ConfigMap {
		return &corev1.ConfigMap{Data: map[string]string{RootsKey: string(bytes.Join(pems, nil))}}
	}
	good := certPEM(t, "root-a", now.Add(-day), now.Add(365*day))
	soon := certPEM(t, "root-b", now.Add(-day), now.Add(10*day))
	gone := certPEM(t, "root-c", now.Add(-30*day), now.Add(-day))
	future := certPEM(t, "root-d", now.Add(day), now.Add(30*day))
	for _, c := range []struct {
		name string
		cm   *corev1.ConfigMap
		want Status
		in   string
	}{
		{"valid", cm(good), OK, "earliest expiry"},
		{"one near expiry", cm(good, soon), Warn, "CN=root-b expires in 10d0h"},
		{"expired", cm(good, gone), Fail, "CN=root-c expired"},
		{"not yet valid", cm(future), Fail, "not valid before"},
		{"garbage", cm([]byte("hello")), Fail, "no PEM certificate"},
		{"absent", nil, Fail, "absent"},
	} {
		r := RootsResult(c.cm, now)
		if r.Status != c.want || !strings.Contains(r.Detail, c.in) {
			t.Errorf("%s: %+v, want %s with %q", c.name, r, c.want, c.in)
		}
	}
}

func TestParseConfigUpdates(t *testing.T) {
	metrics := `# HELP warren_ztunnel_config_updates_total Configuration updates
# TYPE warren_ztunnel_config_updates_total counter
warren_ztunnel_config_updates_total{result="acked"} 7
warren_ztunnel_config_updates_total{result="nacked"} 1
warren_ztunnel_tcp_sent_bytes_total{x="acked"} 99
`
	u, err := ParseConfigUpdates(strings.NewReader(metrics))
	if err != nil || u != (ConfigUpdates{Acked: 7, Nacked: 1, Found: true}) {
		t.Errorf("%+v %v", u, err)
	}
	u, err = ParseConfigUpdates(strings.NewReader("other 1\n"))
	if err != nil || u.Found {
		t.Errorf("absent: %+v %v", u, err)
	}
	if _, err := ParseConfigUpdates(strings.NewReader(`warren_ztunnel_config_updates_total{result="acked"} x` + "\n")); err == nil {
		t.Error("bad value accepted")
	}
}

func TestZtunnelResultsAndReport(t *testing.T) {
	day := 24 * time.Hour
	healthy := ZtunnelProbe{Node: "node-1", Pod: "warren-node-aaaaa", Updates: ConfigUpdates{Acked: 4, Found: true},
		Certs: []Cert{{Identity: "spiffe://cluster.local/ns/shop/sa/web", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(23 * time.Hour)}}}
	overdue := ZtunnelProbe{Node: "node-4", Pod: "warren-node-ddddd", Updates: ConfigUpdates{Acked: 1, Found: true},
		Certs: []Cert{{Identity: "spiffe://cluster.local/ns/shop/sa/web", NotBefore: now.Add(-20 * time.Hour), NotAfter: now.Add(4 * time.Hour)}}}
	sick := ZtunnelProbe{Node: "node-2", Pod: "warren-node-bbbbb", ReadyErr: errors.New("/healthz/ready: 503 Service Unavailable"),
		Updates: ConfigUpdates{Acked: 3, Nacked: 2, Found: true},
		Certs:   []Cert{{Identity: "spiffe://cluster.local/ns/shop/sa/db", NotBefore: now.Add(-2 * day), NotAfter: now.Add(-day)}}}
	fresh := ZtunnelProbe{Node: "node-3", Pod: "warren-node-ccccc", UpdatesErr: errors.New("port-forward: pod not running")}
	if got := statuses(ZtunnelResults(healthy, now)); got != "ok,ok,ok" {
		t.Errorf("healthy: %s", got)
	}
	if got := statuses(ZtunnelResults(sick, now)); got != "fail,warn,fail" {
		t.Errorf("sick: %s", got)
	}
	if got := statuses(ZtunnelResults(fresh, now)); got != "ok,fail,ok" {
		t.Errorf("fresh: %s", got)
	}
	// A 24 h certificate with 4 h left: the renewal at 12 h is overdue.
	if got := statuses(ZtunnelResults(overdue, now)); got != "ok,ok,warn" {
		t.Errorf("overdue renewal: %s", got)
	}
	var results []Result
	results = append(results, ok("kubernetes-api", "can reach the API server", "v1.34.0"))
	results = append(results, NodeResults([]corev1.Node{node("node-1", "linux", "6.1.0"), node("node-2", "linux", "5.4.0")})...)
	for _, p := range []ZtunnelProbe{healthy, sick, fresh, overdue} {
		results = append(results, ZtunnelResults(p, now)...)
	}
	var b strings.Builder
	if failed := WriteResults(&b, results); !failed {
		t.Error("a failed check did not fail the report")
	}
	golden(t, "check.golden", b.String())
	b.Reset()
	if failed := WriteResults(&b, ZtunnelResults(healthy, now)); failed {
		t.Error("a healthy report failed")
	}
}

func TestCertStateAndHuman(t *testing.T) {
	for _, c := range []struct {
		nb, na time.Time
		want   string
	}{
		{now.Add(time.Hour), now.Add(2 * time.Hour), "NOT YET VALID"},
		{now.Add(-time.Hour), now, "EXPIRED"},
		{now.Add(-4 * time.Hour), now.Add(90 * time.Minute), "EXPIRES IN 1h30m"},
		{now.Add(-time.Hour), now.Add(23 * time.Hour), "VALID (23h0m left)"},
		{now.Add(-365 * 24 * time.Hour), now.Add(29 * 24 * time.Hour), "EXPIRES IN 29d0h"},
		{now.Add(-time.Hour), now.Add(90 * 24 * time.Hour), "VALID (90d0h left)"},
	} {
		if got := CertState(c.nb, c.na, now); got != c.want {
			t.Errorf("CertState = %q, want %q", got, c.want)
		}
	}
	if got := Human(42 * time.Second); got != "42s" {
		t.Errorf("Human = %q", got)
	}
}
