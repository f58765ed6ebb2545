package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/devpki"
	"github.com/warrenmesh/warren/internal/identity"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

type csrOpts struct {
	key  crypto.Signer
	uris []string
	dns  []string
	ips  []net.IP
}

func makeCSR(t *testing.T, o csrOpts) []byte {
	t.Helper()
	if o.key == nil {
		o.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	tmpl := &x509.CertificateRequest{DNSNames: o.dns, IPAddresses: o.ips}
	for _, s := range o.uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, o.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestCheckCSR(t *testing.T) {
	const good = "spiffe://cluster.local/ns/a/sa/web"
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	tampered := makeCSR(t, csrOpts{uris: []string{good}})
	b, _ := pem.Decode(tampered)
	b.Bytes[len(b.Bytes)-3] ^= 0xff // inside the signature
	tampered = pem.EncodeToMemory(b)
	for _, tc := range []struct {
		name string
		csr  []byte
		want Reason
	}{
		{"good", makeCSR(t, csrOpts{uris: []string{good}}), ""},
		{"good DER", func() []byte { b, _ := pem.Decode(makeCSR(t, csrOpts{uris: []string{good}})); return b.Bytes }(), ""},
		{"garbage", []byte("hello"), ReasonMalformedCSR},
		{"certificate PEM", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), ReasonMalformedCSR},
		{"bad signature", tampered, ReasonMalformedCSR},
		{"RSA", makeCSR(t, csrOpts{key: rsaKey, uris: []string{good}}), ReasonWrongKeyType},
		{"P-384", makeCSR(t, csrOpts{key: p384, uris: []string{good}}), ReasonWrongKeyType},
		{"Ed25519", makeCSR(t, csrOpts{key: edKey, uris: []string{good}}), ReasonWrongKeyType},
		{"no SAN", makeCSR(t, csrOpts{}), ReasonWrongSANCount},
		{"two URI SANs", makeCSR(t, csrOpts{uris: []string{good, "spiffe://cluster.local/ns/a/sa/db"}}), ReasonWrongSANCount},
		{"URI and DNS", makeCSR(t, csrOpts{uris: []string{good}, dns: []string{"web.a"}}), ReasonWrongSANCount},
		{"URI and IP", makeCSR(t, csrOpts{uris: []string{good}, ips: []net.IP{net.IPv4(10, 0, 0, 1)}}), ReasonWrongSANCount},
		{"https URI", makeCSR(t, csrOpts{uris: []string{"https://cluster.local/ns/a/sa/web"}}), ReasonWrongSAN},
		{"extra path", makeCSR(t, csrOpts{uris: []string{good + "/x"}}), ReasonWrongSAN},
		{"other trust domain", makeCSR(t, csrOpts{uris: []string{"spiffe://evil.example/ns/a/sa/web"}}), ReasonWrongSAN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, id, err := CheckCSR(tc.csr, "cluster.local")
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (err %v), want %q", got, err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), ": ") {
				t.Errorf("error %q has no detail", err)
			}
			if tc.want == "" && id.String() != good {
				t.Errorf("id = %s", id)
			}
		})
	}
}

func TestSignVerifies(t *testing.T) {
	root, err := NewRoot(Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	id := identity.New("a", "web")
	csr, _, err := CheckCSR(makeCSR(t, csrOpts{uris: []string{id.String()}}), "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := root.Sign(csr, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := parseCerts(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain of %d certificates, want the leaf alone (the root is not sent)", len(chain))
	}
	leaf := chain[0]
	if got := leaf.NotAfter.Sub(t0); got != 24*time.Hour {
		t.Errorf("valid for %v after now, want 24h", got)
	}
	if leaf.IsCA || len(leaf.URIs) != 1 || leaf.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("leaf: CA %v, URIs %v", leaf.IsCA, leaf.URIs)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		got, err := identity.VerifyChain(chain, root.Roots(), usage, t0.Add(time.Hour))
		if err != nil || got != id {
			t.Errorf("verify for %v: %v, %v", usage, got, err)
		}
	}
	if _, err := identity.VerifyChain(chain, root.Roots(), x509.ExtKeyUsageClientAuth, t0.Add(25*time.Hour)); err == nil {
		t.Error("verified after 25 h")
	}
	other, _ := NewRoot(Options{Now: fixedNow})
	if _, err := identity.VerifyChain(chain, other.Roots(), x509.ExtKeyUsageClientAuth, t0); err == nil {
		t.Error("verified against another root")
	}

	// The PEM round trip gives a CA with the same key and roots.
	c, k, r, err := root.PEM()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Load(c, k, r, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if !again.cert.Equal(root.cert) || !bytes.Equal(again.RootsPEM(), root.RootsPEM()) {
		t.Error("round trip changed the CA")
	}
}

// intermediate returns PEM for an intermediate CA signed by root, as an
// operator would bring it.
func intermediate(t *testing.T, root *CA) (certPEM, keyPEM []byte) {
	t.Helper()
	kp, err := (&devpki.KeyPair{Cert: root.cert, Key: root.key}).Issue(devpki.Spec{CommonName: "operator intermediate",
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(12 * time.Hour), KeyUsage: x509.KeyUsageCertSign, IsCA: true})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return kp.CertPEM(), keyPEM
}

func TestIntermediate(t *testing.T) {
	root, _ := NewRoot(Options{Now: fixedNow})
	interPEM, interKey := intermediate(t, root)
	_, rootKey, rootPEM, _ := root.PEM()

	ca, err := Load(append(interPEM, rootPEM...), interKey, rootPEM, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	id := identity.New("a", "web")
	csr, _, _ := CheckCSR(makeCSR(t, csrOpts{uris: []string{id.String()}}), "cluster.local")
	chainPEM, err := ca.Sign(csr, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := parseCerts(chainPEM)
	if len(chain) != 2 {
		t.Fatalf("chain of %d, want leaf and intermediate", len(chain))
	}
	if got, err := identity.VerifyChain(chain, root.Roots(), x509.ExtKeyUsageClientAuth, t0); err != nil || got != id {
		t.Errorf("verify: %v, %v", got, err)
	}
	if !chain[0].NotAfter.Equal(chain[1].NotAfter) {
		t.Errorf("leaf outlives its 12 h intermediate: %v > %v", chain[0].NotAfter, chain[1].NotAfter)
	}

	other, _ := NewRoot(Options{Now: fixedNow})
	_, _, otherPEM, _ := other.PEM()
	for _, tc := range []struct {
		name             string
		cert, key, roots []byte
		want             string
	}{
		{"key does not match", interPEM, rootKey, rootPEM, "does not match"},
		{"other root", interPEM, interKey, otherPEM, "does not chain"},
		{"no certificate", nil, interKey, rootPEM, "no PEM certificate"},
		{"no key", interPEM, nil, rootPEM, "no PEM block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Load(tc.cert, tc.key, tc.roots, Options{Now: fixedNow}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

type staticAuthn map[string]Caller

func (s staticAuthn) Authenticate(_ context.Context, token string) (Caller, error) {
	if c, ok := s[token]; ok {
		return c, nil
	}
	return Caller{}, deny(ReasonUnauthenticated, "unknown token")
}

func TestSigner(t *testing.T) {
	root, _ := NewRoot(Options{Now: fixedNow})
	running := func(name, node, sa string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name, UID: types.UID(name + node + sa)},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa}, Status: corev1.PodStatus{Phase: phase}}
	}
	m := model.Build(model.Inputs{Pods: []*corev1.Pod{
		running("web", "n1", "web", corev1.PodRunning),
		running("db", "n2", "db", corev1.PodRunning),
		running("batch", "n1", "batch", corev1.PodPending),
		running("done", "n1", "done", corev1.PodSucceeded),
	}})
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s := &Signer{
		CA: root,
		Authn: staticAuthn{
			"zt1":  {Namespace: "warren-system", ServiceAccount: "ztunnel", Pod: "zt1", Node: "n1"},
			"user": {Namespace: "a", ServiceAccount: "web", Pod: "web", Node: "n1"},
			"wp":   {Namespace: "a", ServiceAccount: "wp", Pod: "wp-1", Node: "n2"},
			"nogw": {Namespace: "b", ServiceAccount: "wp", Pod: "wp-1", Node: "n2"},
			"down": {Namespace: "a", ServiceAccount: "unsure", Pod: "u-1", Node: "n2"},
		},
		// a/wp runs a Gateway of the waypoint class; b/wp is a namesake
		// without one; a/unsure cannot be told (the cache is down).
		Waypoints: WaypointsFunc(func(_ context.Context, ns, name string) (bool, error) {
			if ns == "a" && name == "unsure" {
				return false, errors.New("cache down")
			}
			return ns == "a" && name == "wp", nil
		}),
		Authz:   ModelAuthorizer{Model: func() *model.Model { return m }},
		Callers: []string{"warren-system/ztunnel"},
		Log:     slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics: metrics,
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token, id string
		want            Reason
	}{
		{"own node", "zt1", "spiffe://cluster.local/ns/a/sa/web", ""},
		{"another node's identity", "zt1", "spiffe://cluster.local/ns/a/sa/db", ReasonNotOnNode},
		{"pending pod bound to the node (enrolled before it runs)", "zt1", "spiffe://cluster.local/ns/a/sa/batch", ""},
		{"finished pod", "zt1", "spiffe://cluster.local/ns/a/sa/done", ReasonNotOnNode},
		{"no such service account", "zt1", "spiffe://cluster.local/ns/a/sa/ghost", ReasonNotOnNode},
		{"workload token", "user", "spiffe://cluster.local/ns/a/sa/web", ReasonCallerNotAllowed},
		{"bad token", "nope", "spiffe://cluster.local/ns/a/sa/web", ReasonUnauthenticated},
		{"wrong trust domain", "zt1", "spiffe://other/ns/a/sa/web", ReasonWrongSAN},
		{"workload token, another identity", "user", "spiffe://cluster.local/ns/a/sa/db", ReasonCallerNotAllowed},
		{"waypoint, own identity", "wp", "spiffe://cluster.local/ns/a/sa/wp", ""},
		{"waypoint, another service account", "wp", "spiffe://cluster.local/ns/a/sa/web", ReasonNotOwnIdentity},
		{"waypoint, its name in another namespace", "wp", "spiffe://cluster.local/ns/b/sa/wp", ReasonNotOwnIdentity},
		{"waypoint, other trust domain", "wp", "spiffe://other/ns/a/sa/wp", ReasonWrongSAN},
		{"service account without a Gateway", "nogw", "spiffe://cluster.local/ns/b/sa/wp", ReasonCallerNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			chain, err := s.SignCSR(context.Background(), tc.token, makeCSR(t, csrOpts{uris: []string{tc.id}}))
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if tc.want == "" {
				if len(chain) == 0 {
					t.Fatal("no chain")
				}
				return
			}
			if !strings.Contains(logs.String(), "reason="+string(tc.want)) {
				t.Errorf("denial not logged with its reason: %s", logs.String())
			}
		})
	}
	if got := testutil.ToFloat64(metrics.requests.WithLabelValues("denied", string(ReasonNotOnNode))); got != 3 {
		t.Errorf("denied NotOnNode = %v, want 3", got)
	}
	if got := testutil.ToFloat64(metrics.requests.WithLabelValues("signed", "")); got != 3 {
		t.Errorf("signed = %v, want 3 (web, the pending batch, the waypoint)", got)
	}

	// Not knowing whether a caller is a waypoint is no denial: it retries.
	if _, err := s.SignCSR(context.Background(), "down", makeCSR(t, csrOpts{uris: []string{"spiffe://cluster.local/ns/a/sa/unsure"}})); err == nil || ReasonOf(err) != "" {
		t.Errorf("waypoint lookup failed: %v, want an error that is no denial", err)
	}
	// Without Waypoints, a waypoint is any other caller.
	s.Waypoints = nil
	if _, err := s.SignCSR(context.Background(), "wp", makeCSR(t, csrOpts{uris: []string{"spiffe://cluster.local/ns/a/sa/wp"}})); ReasonOf(err) != ReasonCallerNotAllowed {
		t.Errorf("no Waypoints: %v, want CallerNotAllowed", err)
	}

	s.Authz = ModelAuthorizer{Model: func() *model.Model { return nil }}
	if _, err := s.SignCSR(context.Background(), "zt1", makeCSR(t, csrOpts{uris: []string{"spiffe://cluster.local/ns/a/sa/web"}})); ReasonOf(err) != ReasonNotOnNode {
		t.Errorf("before the first sync: %v, want a denial", err)
	}
}

func TestServingCertificate(t *testing.T) {
	now := t0
	root, _ := NewRoot(Options{Now: func() time.Time { return now }})
	get := root.ServingCertificate([]string{"warren-controller.warren-system.svc"})
	c1, err := get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Leaf.Verify(x509.VerifyOptions{DNSName: "warren-controller.warren-system.svc", Roots: root.Roots(), CurrentTime: now}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(11 * time.Hour)
	if c2, _ := get(nil); c2 != c1 {
		t.Error("reissued before half-life")
	}
	now = t0.Add(13 * time.Hour)
	if c3, _ := get(nil); c3 == c1 {
		t.Error("not reissued after half-life")
	}
}
