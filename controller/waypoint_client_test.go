package controller

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/controller/gateway"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/controlplane"
	"github.com/warrenmesh/warren/internal/enrollment"
	wait "github.com/warrenmesh/warren/internal/eventually"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/svid"
	"github.com/warrenmesh/warren/waypoint"
	wpmodel "github.com/warrenmesh/warren/waypoint/model"
)

// TestWaypointClient runs the waypoint's real control-plane client
// (waypoint.ControlPlane, as cmd/waypoint's controller mode does) against
// the whole controller on a real apiserver: a Gateway of class
// warren-waypoint and its ServiceAccount, a pod-bound token of that
// ServiceAccount, and nothing else. The waypoint gets a certificate for its
// own SPIFFE ID that verifies against the published roots, and a
// configuration the waypoint compiles with the Services (its namespace's
// and another's) and the peers; a token of another ServiceAccount of the
// namespace is refused a certificate for either identity.
func TestWaypointClient(t *testing.T) {
	needEnv(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "wc1")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createNamespace(t, cs, "wpc", nil)
	createNamespace(t, cs, "wpc-apps", map[string]string{enrollment.Label: enrollment.Enabled})
	createSA(t, cs, "wpc", "wp")
	createSA(t, cs, "wpc", "app")
	createSA(t, cs, "wpc-apps", "web")
	waypointGateway(t, "wpc", "wp", gateway.ClassName)
	wpPod := runningPod(t, cs, "wpc", "wp-1", "wp", "wc1", "10.244.51.5")
	appPod := runningPod(t, cs, "wpc", "app-1", "app", "wc1", "10.244.51.6")
	runningPod(t, cs, "wpc-apps", "web-1", "web", "wc1", "10.244.51.7")
	for _, svc := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "wpc", Name: "front"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "wpc-apps", Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}},
	} {
		if _, err := cs.CoreV1().Services(svc.Namespace).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	ctx, addr, _, _ := runController(t, false)
	rootsPEM, pool := meshRoots(ctx, t, cs)
	client := func(pod *corev1.Pod) *controlplane.Client {
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(podToken(t, cs, pod)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := &controlplane.Client{Addr: addr, ServerName: "warren-controller.warren-system.svc", TokenFile: tokenFile,
			Roots: identity.NewRoots(pool), Log: testLog(t)}
		t.Cleanup(func() { c.Close() })
		return c
	}

	wpClient := client(wpPod)
	cp := &waypoint.ControlPlane{Client: wpClient, Self: "wpc/wp", TrustDomain: "cluster.local",
		Bundle: []byte(rootsPEM), Roots: wpClient.Roots, Log: testLog(t)}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	certs, err := cp.Certificate(cctx)
	if err != nil {
		t.Fatalf("waypoint certificate: %v", err)
	}
	want := identity.ID{TrustDomain: "cluster.local", Namespace: "wpc", ServiceAccount: "wp"}
	got, err := identity.VerifyChain([]*x509.Certificate{certs.Load().Leaf}, pool, x509.ExtKeyUsageServerAuth, time.Now())
	if err != nil || got != want {
		t.Fatalf("waypoint certificate: %v %v, want %s", got, err, want)
	}

	var (
		mu   sync.Mutex
		last *meshv1.WaypointConfig
	)
	go cp.Run(ctx, func(cfg *meshv1.WaypointConfig) error {
		// What the waypoint does with it: compile, then swap.
		if _, err := wpmodel.Compile(cfg, "wpc/wp"); err != nil {
			t.Errorf("the waypoint would refuse the config: %v", err)
			return err
		}
		mu.Lock()
		last = proto.Clone(cfg).(*meshv1.WaypointConfig)
		mu.Unlock()
		return nil
	})
	wait.NoError(t, "waypoint config with both Services and the peer", 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if last == nil {
			return errors.New("no config yet")
		}
		for _, name := range []string{"wpc/front", "wpc-apps/web"} {
			if !slices.ContainsFunc(last.Services, func(s *meshv1.Service) bool { return s.Namespace+"/"+s.Name == name }) {
				return fmt.Errorf("no Service %s in %d services", name, len(last.Services))
			}
		}
		if !slices.ContainsFunc(last.Workloads, func(p *meshv1.Peer) bool { return p.Namespace == "wpc-apps" && p.Name == "web-1" }) {
			return fmt.Errorf("no peer wpc-apps/web-1 in %d workloads", len(last.Workloads))
		}
		return nil
	})

	// Another ServiceAccount's token: no certificate, neither for itself
	// nor for the waypoint.
	appClient := client(appPod)
	for _, id := range []identity.ID{want, {TrustDomain: "cluster.local", Namespace: "wpc", ServiceAccount: "app"}} {
		_, _, err := svid.Sign(ctx, id, appClient.Sign)
		if status.Code(errors.Unwrap(err)) != codes.PermissionDenied {
			t.Errorf("app's token asking for %s: %v, want PermissionDenied", id, err)
		}
	}
}
