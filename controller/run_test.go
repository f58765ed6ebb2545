package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/enrollment"
)

// TestRun runs the whole controller (leader election, model, CA, gRPC over
// TLS on loopback) against the real apiserver, and checks that a subscriber
// on a node gets its snapshot and then the pod that starts there.
func TestRun(t *testing.T) {
	needEnv(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "n3")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createNamespace(t, cs, "run", map[string]string{enrollment.Label: enrollment.Enabled})
	createSA(t, cs, model.DefaultSystemNamespace, "ztunnel")
	createSA(t, cs, "run", "app")
	zt := runningPod(t, cs, model.DefaultSystemNamespace, "ztunnel-n3", "ztunnel", "n3", "10.250.0.13")

	ctx, addr, _, _ := runController(t, true)

	// The data plane trusts the mesh roots the controller publishes in a
	// ConfigMap (the same as the CA Secret's) and names the controller by its
	// service name.
	var roots *x509.CertPool
	eventually(t, "roots ConfigMap", func() error {
		cm, err := cs.CoreV1().ConfigMaps(model.DefaultSystemNamespace).Get(ctx, ca.RootsConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s, err := cs.CoreV1().Secrets(model.DefaultSystemNamespace).Get(ctx, ca.DefaultSecretName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data[ca.RootsKey] != string(s.Data[ca.SecretRoots]) {
			return fmt.Errorf("ConfigMap roots differ from the CA Secret's")
		}
		roots = x509.NewCertPool()
		roots.AppendCertsFromPEM([]byte(cm.Data[ca.RootsKey]))
		return nil
	})
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: "warren-controller.warren-system.svc", MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cl := meshv1.NewDistributionClient(cc)
	sctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+podToken(t, cs, zt))
	st, err := cl.Subscribe(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: "n3"}}}); err != nil {
		t.Fatal(err)
	}
	u, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !u.Snapshot {
		t.Fatalf("first update is not a snapshot: %v", u)
	}
	for _, r := range u.Upserts {
		if strings.HasPrefix(r.Key, "workload/") {
			t.Errorf("snapshot for n3 holds a workload before any runs there: %s", r.Key)
		}
	}
	if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Ack{Ack: &meshv1.Ack{Version: u.Version}}}); err != nil {
		t.Fatal(err)
	}

	// A pod whose opt-out has a typo: its agent refuses the label and does
	// not enroll it, so no ztunnel may be told to reach it over HBONE. It
	// is created first: the update that brings app has seen it.
	typo := runningPodLabelled(t, cs, "run", "typo", "app", "n3", "10.244.3.6", map[string]string{enrollment.Label: "Disabled"})
	app := runningPod(t, cs, "run", "app", "app", "n3", "10.244.3.5")
	deadline := time.Now().Add(20 * time.Second)
	for found := false; !found; {
		if time.Now().After(deadline) {
			t.Fatal("the new pod never reached the subscriber")
		}
		u, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range u.Upserts {
			if r.Key == "workload/"+string(typo.UID) || r.Key == "peer/"+string(typo.UID) {
				t.Errorf("pushed %s, a pod labelled %s=Disabled", r.Key, enrollment.Label)
			}
			if w := r.GetWorkload(); w != nil && w.Uid == string(app.UID) && len(w.Ips) == 1 {
				found = true
				if w.Identity != "spiffe://cluster.local/ns/run/sa/app" || w.MtlsMode != meshv1.MTLSMode_MTLS_MODE_PERMISSIVE {
					t.Errorf("workload %v", w)
				}
			}
		}
		if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Ack{Ack: &meshv1.Ack{Version: u.Version}}}); err != nil {
			t.Fatal(err)
		}
	}

	// The same connection signs for the node's workload, and not for others.
	resp, err := cl.SignCertificate(sctx, &meshv1.SignRequest{Csr: csrFor(t, "spiffe://cluster.local/ns/run/sa/app")})
	if err != nil || len(resp.Chain) == 0 {
		t.Fatalf("sign: %v", err)
	}
	_, err = cl.SignCertificate(sctx, &meshv1.SignRequest{Csr: csrFor(t, "spiffe://cluster.local/ns/shop/sa/db")})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("sign another node's identity: %v", err)
	}
}

// TestTwoReplicas runs two controllers with leader election on the same
// apiserver: exactly one leads and writes status, both serve subscriptions
// and sign with the same CA, and when the leader stops the other takes over
// the status writes.
func TestTwoReplicas(t *testing.T) {
	needEnv(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "n4")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createNamespace(t, cs, "ha", map[string]string{enrollment.Label: enrollment.Enabled})
	createSA(t, cs, model.DefaultSystemNamespace, "ztunnel")
	createSA(t, cs, "ha", "app")
	zt := runningPod(t, cs, model.DefaultSystemNamespace, "ztunnel-n4", "ztunnel", "n4", "10.250.0.14")
	runningPod(t, cs, "ha", "app", "app", "n4", "10.244.4.5")
	kc, err := client.New(env.Config, client.Options{Scheme: scheme(t)})
	if err != nil {
		t.Fatal(err)
	}

	start := func(name string) *replica {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{name: name, addr: lis.Addr(), cancel: cancel, done: make(chan error, 1), elected: make(chan struct{}), writes: &recorder{}}
		log := slog.New(&recordingHandler{Handler: testLog(t).With("replica", name).Handler(), rec: r.writes})
		go func() {
			r.done <- Run(ctx, RunConfig{Config: Config{Log: log}, Rest: env.Config, GRPCListener: lis,
				MetricsAddr: "0", HealthAddr: "0", Registry: prometheus.NewRegistry(),
				LeaderElection: true, LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond,
				Elected: func() { close(r.elected) }})
		}()
		t.Cleanup(func() { r.stop(t) })
		return r
	}
	a, b := start("a"), start("b")

	// Exactly one leads, and keeps leading.
	var leader, follower *replica
	select {
	case <-a.elected:
		leader, follower = a, b
	case <-b.elected:
		leader, follower = b, a
	case <-time.After(30 * time.Second):
		t.Fatal("no replica elected in 30 s")
	}
	time.Sleep(3 * time.Second) // more than a lease
	select {
	case <-follower.elected:
		t.Fatalf("both replicas lead")
	default:
	}

	// Only the leader writes status, once.
	policy := func(name string) *v1alpha1.AuthorizationPolicy {
		p := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ha", Name: name},
			Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow, Rules: []v1alpha1.Rule{{}}}}
		if err := kc.Create(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		eventually(t, name+" status", func() error {
			if err := kc.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
				return err
			}
			if got := condOf(p.Status); !strings.HasPrefix(got, "True/Accepted gen 1") {
				return fmt.Errorf("condition %s", got)
			}
			return nil
		})
		return p
	}
	policy("first")
	eventually(t, "the leader records the write of ha/first", func() error {
		if leader.writes.count("ha/first") == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	time.Sleep(time.Second) // room for a second, unwanted write
	if got, other := leader.writes.count("ha/first"), follower.writes.count("ha/first"); got != 1 || other != 0 {
		t.Errorf("status of ha/first written %d times by the leader, %d by the follower; want 1 and 0", got, other)
	}

	// Both serve: a snapshot for the node and a certificate for its workload,
	// from the same CA.
	var rootsPEM string
	eventually(t, "roots ConfigMap", func() error {
		cm, err := cs.CoreV1().ConfigMaps(model.DefaultSystemNamespace).Get(context.Background(), ca.RootsConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		rootsPEM = cm.Data[ca.RootsKey]
		return nil
	})
	published := x509.NewCertPool()
	published.AppendCertsFromPEM([]byte(rootsPEM))
	token := podToken(t, cs, zt)
	type signed struct {
		leaf  *x509.Certificate
		inter *x509.CertPool
		roots *x509.CertPool
		pem   []byte
	}
	served := map[string]signed{}
	for _, r := range []*replica{a, b} {
		cc, err := grpc.NewClient(r.addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: published, ServerName: "warren-controller.warren-system.svc", MinVersion: tls.VersionTLS13})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cl := meshv1.NewDistributionClient(cc)
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token), 20*time.Second)
		defer cancel()
		st, err := cl.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: "n4"}}}); err != nil {
			t.Fatal(err)
		}
		u, err := st.Recv()
		if err != nil || !u.Snapshot {
			t.Fatalf("replica %s: first update %v, %v", r.name, u, err)
		}
		var resp *meshv1.SignResponse
		eventually(t, "replica "+r.name+" signs", func() error { // its model may not hold the pod yet
			resp, err = cl.SignCertificate(ctx, &meshv1.SignRequest{Csr: csrFor(t, "spiffe://cluster.local/ns/ha/sa/app")})
			return err
		})
		var s signed
		s.roots, s.inter, s.pem = x509.NewCertPool(), x509.NewCertPool(), resp.Roots
		s.roots.AppendCertsFromPEM(resp.Roots)
		for rest := resp.Chain; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatalf("replica %s: chain: %v", r.name, err)
			}
			if s.leaf == nil {
				s.leaf = c
			} else {
				s.inter.AddCert(c)
			}
		}
		if s.leaf == nil {
			t.Fatalf("replica %s: no certificate in the chain", r.name)
		}
		served[r.name] = s
	}
	if string(served["a"].pem) != string(served["b"].pem) || string(served["a"].pem) != rootsPEM {
		t.Errorf("the replicas hand out different roots")
	}
	for signer, verifier := range map[string]string{"a": "b", "b": "a"} {
		s := served[signer]
		if _, err := s.leaf.Verify(x509.VerifyOptions{Roots: served[verifier].roots, Intermediates: s.inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("a certificate signed by %s does not verify against %s's roots: %v", signer, verifier, err)
		}
	}

	// The leader stops: the other takes over and writes the next status.
	leader.stop(t)
	select {
	case <-follower.elected:
	case <-time.After(20 * time.Second):
		t.Fatal("the follower did not take over in 20 s")
	}
	policy("second")
	// The status is visible on the apiserver a moment before the writer has
	// its response and logs the write: wait for the record, then give a
	// second, unwanted write time to show.
	eventually(t, "the new leader records the write of ha/second", func() error {
		if got := follower.writes.count("ha/second"); got == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	time.Sleep(time.Second)
	if got := follower.writes.count("ha/second"); got != 1 {
		t.Errorf("status of ha/second written %d times by the new leader, want 1", got)
	}
}

// replica is one controller.Run of TestTwoReplicas.
type replica struct {
	name    string
	addr    net.Addr
	cancel  context.CancelFunc
	done    chan error
	elected chan struct{}
	writes  *recorder
	once    sync.Once
}

// stop cancels the replica and waits for Run to return, once.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("replica %s: Run: %v", r.name, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("replica %s: Run did not return 20 s after cancel", r.name)
		}
	})
}

// recorder counts the status writes a controller logs, by policy.
type recorder struct {
	mu     sync.Mutex
	writes map[string]int
}

func (r *recorder) count(policy string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes[policy]
}

// recordingHandler passes records on and tells the recorder of status
// writes.
type recordingHandler struct {
	slog.Handler
	rec *recorder
}

func (h *recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "policy status written" {
		var ns, name string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "namespace":
				ns = a.Value.String()
			case "name":
				name = a.Value.String()
			}
			return true
		})
		h.rec.mu.Lock()
		if h.rec.writes == nil {
			h.rec.writes = map[string]int{}
		}
		h.rec.writes[ns+"/"+name]++
		h.rec.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordingHandler{Handler: h.Handler.WithAttrs(as), rec: h.rec}
}

func (h *recordingHandler) WithGroup(name string) slog.Handler {
	return &recordingHandler{Handler: h.Handler.WithGroup(name), rec: h.rec}
}

// TestBadInputOnTheGRPCPort sends what is not a data plane's request to a
// running controller: each is refused with a reason, and the controller
// keeps serving.
func TestBadInputOnTheGRPCPort(t *testing.T) {
	needEnv(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "n5")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createSA(t, cs, model.DefaultSystemNamespace, "ztunnel")
	zt := runningPod(t, cs, model.DefaultSystemNamespace, "ztunnel-n5", "ztunnel", "n5", "10.250.0.15")

	ctx, addr, exited, runErr := runController(t, false)
	roots := x509.NewCertPool()
	eventually(t, "roots ConfigMap", func() error {
		cm, err := cs.CoreV1().ConfigMaps(model.DefaultSystemNamespace).Get(ctx, ca.RootsConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !roots.AppendCertsFromPEM([]byte(cm.Data[ca.RootsKey])) {
			return fmt.Errorf("no roots")
		}
		return nil
	})
	tlsConfig := &tls.Config{RootCAs: roots, ServerName: "warren-controller.warren-system.svc", MinVersion: tls.VersionTLS13}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cl := meshv1.NewDistributionClient(cc)
	token := podToken(t, cs, zt)
	serving := func(t *testing.T) {
		t.Helper()
		sctx, scancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), 20*time.Second)
		defer scancel()
		st, err := cl.Subscribe(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: "n5"}}}); err != nil {
			t.Fatal(err)
		}
		if u, err := st.Recv(); err != nil || !u.Snapshot {
			t.Fatalf("the controller no longer serves: %v, %v", u, err)
		}
	}
	serving(t)

	// Not TLS: the handshake fails and the connection is closed, whatever
	// the bytes.
	for name, junk := range map[string]string{
		"raw bytes": "\x00\x01\x02\x03\xff\xfe garbage \x16\x03",
		"HTTP/1":    "GET / HTTP/1.1\r\nHost: warren-controller\r\n\r\n",
		"HTTP/2":    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(junk)); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open 10 s after %q", junk)
			}
			if strings.Contains(string(got), "HTTP/") {
				t.Errorf("answered in plaintext: %q", got)
			}
		})
	}
	// TLS that does not speak gRPC: an unknown protocol is refused in the
	// handshake, by name; HTTPS (which TLS lets in, as if it offered no
	// protocol) is closed unanswered.
	t.Run("TLS, unknown protocol", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: tlsConfig.ServerName, NextProtos: []string{"warren/0"}})
		if err == nil {
			c.Close()
			t.Fatal("handshake succeeded")
		}
		if !strings.Contains(err.Error(), "no application protocol") {
			t.Errorf("handshake error %v, want no application protocol", err)
		}
	})
	t.Run("HTTPS", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: tlsConfig.ServerName, NextProtos: []string{"http/1.1"}})
		if err != nil {
			return // refused in the handshake: fine too
		}
		defer c.Close()
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: warren-controller\r\n\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection still open 10 s after an HTTPS request")
		}
		if len(got) > 0 {
			t.Errorf("answered: %q", got)
		}
	})
	// gRPC over TLS, but no valid token.
	tr, err := cs.CoreV1().ServiceAccounts(model.DefaultSystemNamespace).CreateToken(ctx, "ztunnel", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unbound := tr.Status.Token // the ztunnel's service account, but no pod
	for name, md := range map[string][]string{
		"no token":      nil,
		"garbage token": {"authorization", "Bearer not-a-token"},
		"not bearer":    {"authorization", "Basic " + token},
		"unbound token": {"authorization", "Bearer " + unbound},
		"two tokens":    {"authorization", "Bearer " + token, "authorization", "Bearer " + token},
	} {
		t.Run(name, func(t *testing.T) {
			cctx, ccancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, md...), 20*time.Second)
			defer ccancel()
			_, err := cl.SignCertificate(cctx, &meshv1.SignRequest{Csr: csrFor(t, "spiffe://cluster.local/ns/warren-system/sa/ztunnel")})
			if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() == "" {
				t.Errorf("SignCertificate: %v, want Unauthenticated with a reason", err)
			}
			st, err := cl.Subscribe(cctx)
			if err != nil {
				t.Fatal(err)
			}
			_ = st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: "n5"}}})
			if _, err := st.Recv(); status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() == "" {
				t.Errorf("Subscribe: %v, want Unauthenticated with a reason", err)
			}
		})
	}
	// Oversized messages are refused before they are read whole.
	t.Run("oversized", func(t *testing.T) {
		cctx, ccancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), 20*time.Second)
		defer ccancel()
		_, err := cl.SignCertificate(cctx, &meshv1.SignRequest{Csr: make([]byte, MaxRequestBytes+1)})
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
			t.Errorf("SignCertificate: %v, want ResourceExhausted", err)
		}
		st, err := cl.Subscribe(cctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: strings.Repeat("n", 1<<20)}}})
		if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("Subscribe: %v, want ResourceExhausted", err)
		}
	})
	serving(t)
	select {
	case <-exited:
		t.Fatalf("Run returned: %v", *runErr)
	default:
	}
}

// runController runs the whole controller (Run) against the test apiserver
// with its gRPC API on a loopback port, and stops it when the test ends,
// failing the test if Run fails or does not return. It returns a context
// that ends with the test, the gRPC address, and a channel closed when Run
// returns (its error in *runErr).
func runController(t *testing.T, leaderElection bool) (ctx context.Context, addr string, exited <-chan struct{}, runErr *error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var rerr error
	log := testLog(t)
	go func() {
		defer close(done)
		rerr = Run(ctx, RunConfig{Config: Config{Log: log}, Rest: env.Config, GRPCListener: lis,
			MetricsAddr: "0", HealthAddr: "0", LeaderElection: leaderElection, Registry: prometheus.NewRegistry()})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if rerr != nil {
				t.Errorf("Run: %v", rerr)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return 20 s after cancel")
		}
	})
	return ctx, lis.Addr().String(), done, &rerr
}
