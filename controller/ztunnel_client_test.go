package controller

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/enrollment"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/svid"
	"github.com/warrenmesh/warren/ztunnel"
)

// TestZtunnelClient runs the ztunnel's real control-plane client against the
// whole controller on a real apiserver: it verifies the controller with the
// roots from the published ConfigMap, receives its node's view as a Mesh the
// tunnel accepts, sees a pod that starts on another node arrive as a peer,
// and gets a certificate signed for a local workload by CSR.
func TestZtunnelClient(t *testing.T) {
	needEnv(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "z1", "z2")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createNamespace(t, cs, "zc", map[string]string{enrollment.Label: enrollment.Enabled})
	createSA(t, cs, model.DefaultSystemNamespace, "ztunnel")
	createSA(t, cs, "zc", "web")
	zt := runningPod(t, cs, model.DefaultSystemNamespace, "ztunnel-z1", "ztunnel", "z1", "10.250.0.31")
	runningPod(t, cs, "zc", "web-1", "web", "z1", "10.244.31.5")

	ctx, addr, _, _ := runController(t, false)

	rootsPEM, pool := meshRoots(ctx, t, cs)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(podToken(t, cs, zt)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := &ztunnel.ControlPlane{Addr: addr, ServerName: "warren-controller.warren-system.svc", TokenFile: tokenFile,
		Node: "z1", TrustDomain: "cluster.local", Roots: identity.NewRoots(pool), Log: testLog(t)}
	defer cp.Close()

	meshes := make(chan ztunnel.Mesh, 100)
	go cp.Run(ctx, func(m ztunnel.Mesh) error {
		c := &ztunnel.Config{Node: "z1", PinDir: "/unused", CABundle: "/unused", Workloads: m.Workloads, Services: m.Services, Policies: m.Policies}
		if err := c.Validate(); err != nil {
			t.Errorf("the tunnel would refuse the view: %v", err)
			return err
		}
		meshes <- m
		return nil
	})
	waitMesh := func(what string, ok func(ztunnel.Mesh) bool) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m := <-meshes:
				if ok(m) {
					return
				}
			case <-deadline:
				t.Fatalf("never got a view with %s", what)
			}
		}
	}
	named := func(name string) func(ztunnel.Mesh) bool {
		return func(m ztunnel.Mesh) bool {
			return slices.ContainsFunc(m.Workloads, func(w ztunnel.Workload) bool { return w.Name == name })
		}
	}
	waitMesh("local workload web-1", named("web-1"))
	runningPod(t, cs, "zc", "web-2", "web", "z2", "10.244.32.5")
	// By namespace too: other tests of the package run a shop/web-2.
	waitMesh("peer web-2 on z2", func(m ztunnel.Mesh) bool {
		return slices.ContainsFunc(m.Workloads, func(w ztunnel.Workload) bool {
			return w.Namespace == "zc" && w.Name == "web-2" && w.Node == "z2"
		})
	})

	// A CSR for the local workload's identity is signed; the chain verifies
	// against the published roots and names the identity.
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "zc", ServiceAccount: "web"}
	_, csr, err := svid.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	chain, roots, err := cp.Sign(ctx, csr)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if string(roots) != rootsPEM {
		t.Error("the CA answered other roots than the ConfigMap's")
	}
	leaf, err := firstCert(chain)
	if err != nil {
		t.Fatal(err)
	}
	got, err := identity.VerifyChain([]*x509.Certificate{leaf}, pool, x509.ExtKeyUsageServerAuth, time.Now())
	if err != nil || got != id {
		t.Errorf("signed chain: %v %v", got, err)
	}
}

// meshRoots waits for the roots the controller publishes, and returns them
// as PEM and as a pool.
func meshRoots(ctx context.Context, t *testing.T, cs kubernetes.Interface) (string, *x509.CertPool) {
	t.Helper()
	var rootsPEM string
	eventually(t, "roots ConfigMap", func() error {
		cm, err := cs.CoreV1().ConfigMaps(model.DefaultSystemNamespace).Get(ctx, ca.RootsConfigMap, metav1.GetOptions{})
		if err == nil {
			rootsPEM = cm.Data[ca.RootsKey]
		}
		return err
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(rootsPEM))
	return rootsPEM, pool
}

func firstCert(chainPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(chainPEM)
	if b == nil {
		return nil, errors.New("no PEM certificate in the chain")
	}
	return x509.ParseCertificate(b.Bytes)
}
