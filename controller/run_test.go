package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/model"
)

// TestRun runs the whole controller (leader election, model, CA, gRPC over
// TLS on loopback) against the real apiserver, and checks that a subscriber
// on a node gets its snapshot and then the pod that starts there.
func TestRun(t *testing.T) {
	needEnv(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "n3")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createNamespace(t, cs, "run", map[string]string{model.MeshLabel: model.MeshEnabled})
	createSA(t, cs, model.DefaultSystemNamespace, "ztunnel")
	createSA(t, cs, "run", "app")
	zt := runningPod(t, cs, model.DefaultSystemNamespace, "ztunnel-n3", "ztunnel", "n3", "10.250.0.13")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := testLog(t)
	go func() {
		done <- Run(ctx, RunConfig{Config: Config{Log: log}, Rest: env.Config, GRPCListener: lis,
			MetricsAddr: "0", HealthAddr: "0", LeaderElection: true, Registry: prometheus.NewRegistry()})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return 20 s after cancel")
		}
	})

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
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
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
