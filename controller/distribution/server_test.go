package distribution

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/enrollment"
)

type staticAuthn map[string]ca.Caller

func (s staticAuthn) Authenticate(_ context.Context, token string) (ca.Caller, error) {
	if c, ok := s[token]; ok {
		return c, nil
	}
	return ca.Caller{}, &ca.Denied{Reason: ca.ReasonUnauthenticated, Detail: "unknown token"}
}

var authn = staticAuthn{
	"n1":   {Namespace: "warren-system", ServiceAccount: "ztunnel", Pod: "zt1", Node: "n1"},
	"n2":   {Namespace: "warren-system", ServiceAccount: "ztunnel", Pod: "zt2", Node: "n2"},
	"user": {Namespace: "shop", ServiceAccount: "web", Pod: "web", Node: "n1"},
	"wp":   {Namespace: "shop", ServiceAccount: "wp", Pod: "wp-1", Node: "n2"},
	"nogw": {Namespace: "other", ServiceAccount: "wp", Pod: "wp-1", Node: "n2"},
}

// waypoints: shop/wp runs a Gateway of the waypoint class.
var waypoints = ca.WaypointsFunc(func(_ context.Context, ns, name string) (bool, error) {
	return ns == "shop" && name == "wp", nil
})

func pod(name, node, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(name), Labels: labels},
		Spec:   corev1.PodSpec{NodeName: node, ServiceAccountName: name},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}}}
}

func build(pods ...*corev1.Pod) *model.Model {
	return model.Build(model.Inputs{
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enrollment.Label: enrollment.Enabled}}}},
		Pods:       pods,
		Services:   []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.20"}, Ports: []corev1.ServicePort{{Port: 80}}}}},
		AuthorizationPolicies: []*v1alpha1.AuthorizationPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-only"},
			Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow, Selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}}}},
	})
}

type harness struct {
	srv     *Server
	lis     *bufconn.Listener
	metrics *Metrics
	reg     *prometheus.Registry
}

func newHarness(t *testing.T, signer *ca.Signer) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Log: slog.New(slog.NewTextHandler(t.Output(), nil)), Authn: authn,
		Callers: []string{"warren-system/ztunnel"}, Waypoints: waypoints, Signer: signer, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	meshv1.RegisterDistributionServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return &harness{srv: srv, lis: lis, metrics: metrics, reg: reg}
}

func (h *harness) client(t *testing.T) meshv1.DistributionClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return h.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return meshv1.NewDistributionClient(cc)
}

type sub struct {
	t      *testing.T
	stream meshv1.Distribution_SubscribeClient
	cancel context.CancelFunc
}

func (h *harness) subscribe(t *testing.T, token, node string) *sub {
	t.Helper()
	return h.subscribeHello(t, token, &meshv1.Hello{Node: node})
}

func (h *harness) subscribeHello(t *testing.T, token string, hello *meshv1.Hello) *sub {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token))
	t.Cleanup(cancel)
	st, err := h.client(t).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	return &sub{t: t, stream: st, cancel: cancel}
}

func (s *sub) recv() *meshv1.Update {
	s.t.Helper()
	type res struct {
		u   *meshv1.Update
		err error
	}
	ch := make(chan res, 1)
	go func() { u, err := s.stream.Recv(); ch <- res{u, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			s.t.Fatalf("recv: %v", r.err)
		}
		return r.u
	case <-time.After(10 * time.Second):
		s.t.Fatal("no update in 10 s")
		return nil
	}
}

func (s *sub) ack(u *meshv1.Update) {
	s.t.Helper()
	if err := s.stream.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Ack{Ack: &meshv1.Ack{Version: u.Version}}}); err != nil {
		s.t.Fatal(err)
	}
}

func keys(u *meshv1.Update) string {
	var ks []string
	for _, r := range u.Upserts {
		ks = append(ks, r.Key)
	}
	slices.Sort(ks)
	for _, r := range u.Removals {
		ks = append(ks, "-"+r)
	}
	return strings.Join(ks, " ")
}

func TestSnapshotThenDeltas(t *testing.T) {
	h := newHarness(t, nil)
	web := pod("web", "n1", "10.244.1.5", map[string]string{"app": "web"})
	db := pod("db", "n2", "10.244.2.5", map[string]string{"app": "db"})
	h.srv.Publish(build(web, db))

	s1 := h.subscribe(t, "n1", "n1")
	u := s1.recv()
	if !u.Snapshot || keys(u) != "peer/db service/shop/web workload/web" {
		t.Fatalf("n1 snapshot: %v %q; want only its own workload, the peer, the service, no policy", u.Snapshot, keys(u))
	}
	s1.ack(u)
	s2 := h.subscribe(t, "n2", "n2")
	u2 := s2.recv()
	if !u2.Snapshot || keys(u2) != "peer/web policy/shop/db-only service/shop/web workload/db" {
		t.Fatalf("n2 snapshot: %q", keys(u2))
	}
	s2.ack(u2)

	// The peer on n2 moves address; a pod arrives on n1.
	db2 := pod("db", "n2", "10.244.2.9", map[string]string{"app": "db"})
	api := pod("api", "n1", "10.244.1.6", nil)
	h.srv.Publish(build(web, db2, api))
	u = s1.recv()
	if u.Snapshot || keys(u) != "peer/db workload/api" || u.Version <= 1 {
		t.Fatalf("n1 delta: snapshot %v, %q, version %d", u.Snapshot, keys(u), u.Version)
	}
	if got := u.Upserts[0].GetPeer().GetIps(); len(got) != 1 || got[0] != "10.244.2.9" {
		t.Errorf("peer IPs %v", got)
	}
	s1.ack(u)
	u2 = s2.recv()
	if keys(u2) != "peer/api workload/db" {
		t.Fatalf("n2 delta: %q", keys(u2))
	}

	// A refused update is sent again with the next change.
	_ = s2.stream.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Nack{Nack: &meshv1.Nack{Version: u2.Version, Error: "cannot apply"}}})
	h.srv.Publish(build(web, db2))
	u = s1.recv()
	if keys(u) != "-workload/api" {
		t.Fatalf("n1 removal: %q", keys(u))
	}
	s1.ack(u)
	u2 = s2.recv()
	if keys(u2) != "workload/db" { // peer/api was nacked, then went away: nothing to remove
		t.Fatalf("n2 after nack: %q", keys(u2))
	}
	s2.ack(u2)

	// A reconnecting subscriber starts from a snapshot.
	s1.cancel()
	s1 = h.subscribe(t, "n1", "n1")
	if u = s1.recv(); !u.Snapshot || keys(u) != "peer/db service/shop/web workload/web" {
		t.Fatalf("after reconnect: %v %q", u.Snapshot, keys(u))
	}
	s1.ack(u)
	time.Sleep(50 * time.Millisecond) // let the server take the ack
	if got := testutil.ToFloat64(h.metrics.pushes.WithLabelValues("delta", "nack")); got != 1 {
		t.Errorf("nacked deltas = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.metrics.subscribers); got != 2 {
		t.Errorf("subscribers = %v, want 2", got)
	}
}

func TestSlowSubscriberDoesNotHoldOthers(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.Publish(build(pod("web", "n1", "10.244.1.5", nil)))
	slow := h.subscribe(t, "n1", "n1")
	_ = slow.recv() // and never acks nor reads again
	fast := h.subscribe(t, "n2", "n2")
	fast.ack(fast.recv())
	for i := range 20 {
		done := make(chan struct{})
		go func() {
			h.srv.Publish(build(pod("web", "n1", "10.244.1.5", nil), pod("p", "n1", fmt.Sprintf("10.244.1.%d", 10+i), nil)))
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatal("Publish blocked")
		}
		u := fast.recv()
		if keys(u) != "peer/p" {
			t.Fatalf("update %d: %q", i, keys(u))
		}
		fast.ack(u)
	}
}

func TestRefusals(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.Publish(build())
	for _, tc := range []struct {
		name, token, node string
		first             *meshv1.SubscribeRequest
		code              codes.Code
		msg               string
	}{
		{"unknown token", "nope", "n1", nil, codes.Unauthenticated, "unknown token"},
		{"workload token", "user", "n1", nil, codes.PermissionDenied, "may not use the distribution API"},
		{"other node", "n1", "n2", nil, codes.PermissionDenied, "a node gets only its own data"},
		{"no hello", "n1", "", &meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Ack{Ack: &meshv1.Ack{Version: 1}}}, codes.InvalidArgument, "Hello"},
		{"node and waypoint", "n1", "", helloReq(&meshv1.Hello{Node: "n1", Waypoint: "shop/wp"}), codes.InvalidArgument, "either"},
		{"ztunnel as a waypoint", "n1", "", helloReq(&meshv1.Hello{Waypoint: "shop/wp"}), codes.PermissionDenied, "subscribes for its node"},
		{"waypoint as a node", "wp", "n2", nil, codes.PermissionDenied, "a waypoint subscribes as itself"},
		{"waypoint as another waypoint", "wp", "", helloReq(&meshv1.Hello{Waypoint: "shop/other"}), codes.PermissionDenied, "a waypoint subscribes as itself"},
		{"waypoint's name in another namespace", "nogw", "", helloReq(&meshv1.Hello{Waypoint: "other/wp"}), codes.PermissionDenied, "may not use the distribution API"},
		{"workload token as a waypoint", "user", "", helloReq(&meshv1.Hello{Waypoint: "shop/web"}), codes.PermissionDenied, "may not use the distribution API"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tc.token), 10*time.Second)
			defer cancel()
			st, err := h.client(t).Subscribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			first := tc.first
			if first == nil {
				first = &meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: tc.node}}}
			}
			_ = st.Send(first)
			_, err = st.Recv()
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want %v containing %q", err, tc.code, tc.msg)
			}
		})
	}
}

func TestGarbageOnThePort(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.Publish(build(pod("web", "n1", "10.244.1.5", nil)))
	c, err := h.lis.Dial()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01garbage"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Read(make([]byte, 512)) // the server answers or closes; either is fine
	c.Close()
	s := h.subscribe(t, "n1", "n1")
	if u := s.recv(); !u.Snapshot {
		t.Fatal("server unusable after garbage")
	}
}

func TestSignCertificate(t *testing.T) {
	root, err := ca.NewRoot(ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := build(pod("web", "n1", "10.244.1.5", nil), pod("db", "n2", "10.244.2.5", nil))
	signer := &ca.Signer{CA: root, Authn: authn, Authz: ca.ModelAuthorizer{Model: func() *model.Model { return m }},
		Callers: []string{"warren-system/ztunnel"}, Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	h := newHarness(t, signer)
	cl := h.client(t)
	csr := func(id string) []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u, _ := url.Parse(id)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer n1")
	resp, err := cl.SignCertificate(ctx, &meshv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/web")})
	if err != nil || len(resp.Chain) == 0 || len(resp.Roots) == 0 {
		t.Fatalf("sign own workload: %v", err)
	}
	_, err = cl.SignCertificate(ctx, &meshv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/db")})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), string(ca.ReasonNotOnNode)) {
		t.Errorf("another node's identity: %v", err)
	}
	_, err = cl.SignCertificate(context.Background(), &meshv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/web")})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
}

func helloReq(h *meshv1.Hello) *meshv1.SubscribeRequest {
	return &meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: h}}
}

// TestWaypointView: a waypoint subscribes as itself and gets every peer
// (its own node's too) and every Service, and no node's workloads or
// policies; then deltas, as a node does.
func TestWaypointView(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.Publish(build(pod("web", "n1", "10.244.1.5", nil), pod("db", "n2", "10.244.2.5", map[string]string{"app": "db"})))
	wp := h.subscribeHello(t, "wp", &meshv1.Hello{Waypoint: "shop/wp"})
	u := wp.recv()
	if !u.Snapshot || keys(u) != "peer/db peer/web service/shop/web" {
		t.Fatalf("snapshot %v: %q", u.Snapshot, keys(u))
	}
	wp.ack(u)
	h.srv.Publish(build(pod("web", "n1", "10.244.1.5", nil), pod("db", "n2", "10.244.2.5", map[string]string{"app": "db"}), pod("p", "n2", "10.244.2.6", nil)))
	u = wp.recv()
	if u.Snapshot || keys(u) != "peer/p" {
		t.Fatalf("delta %v: %q", u.Snapshot, keys(u))
	}
	wp.ack(u)
	// The node path is unchanged beside it: n2 does not get its own pods
	// as peers.
	n2 := h.subscribe(t, "n2", "n2")
	if u := n2.recv(); strings.Contains(keys(u), "peer/db") || !strings.Contains(keys(u), "workload/db") {
		t.Errorf("node n2's snapshot: %q", keys(u))
	}
}

func TestWaypointKinds(t *testing.T) {
	v := view{waypoint: "shop/wp"}
	for key, want := range map[string]bool{
		"service/a/b": true, "route/a/b": true, "grpcroute/a/b": true, "peer/u": true,
		"workload/u": false, "policy/a/b": false, "other/x": false,
	} {
		if got := v.gets(entry{res: &meshv1.Resource{Key: key}}); got != want {
			t.Errorf("%s: %v, want %v", key, got, want)
		}
	}
}
