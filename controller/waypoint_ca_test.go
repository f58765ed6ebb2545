package controller

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/gateway"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/svid"
)

// gatewayClient is a direct client that knows the Gateway API types.
func gatewayClient(t *testing.T) client.Client {
	t.Helper()
	s := scheme(t)
	if err := gwv1.Install(s); err != nil {
		t.Fatal(err)
	}
	kc, err := client.New(env.Config, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// waypointGateway creates a Gateway of class className in ns, and returns a
// client that reads Gateways.
func waypointGateway(t *testing.T, ns, name string, className gwv1.ObjectName) client.Client {
	t.Helper()
	kc := gatewayClient(t)
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: gwv1.GatewaySpec{GatewayClassName: className,
			Listeners: []gwv1.Listener{{Name: "mesh", Port: gateway.HBONEPort, Protocol: gateway.HBONEProtocol}}}}
	if err := kc.Create(context.Background(), gw); err != nil {
		t.Fatal(err)
	}
	return kc
}

// TestCAWaypointAuthorization runs the CA's decision on a real apiserver
// with real pod-bound tokens (TokenRequest): a waypoint's ServiceAccount,
// whose Gateway is of the waypoint class, gets its own identity only; a
// namesake in a namespace where the Gateway is of another class, and a
// workload's own token, get nothing.
func TestCAWaypointAuthorization(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	createNodes(t, cs, "w1")
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	createNamespace(t, cs, "wpca", nil)
	createNamespace(t, cs, "wpca-other", nil)
	createSA(t, cs, "wpca", "wp")
	createSA(t, cs, "wpca", "app")
	createSA(t, cs, "wpca-other", "wp")
	kc := waypointGateway(t, "wpca", "wp", gateway.ClassName)
	waypointGateway(t, "wpca-other", "wp", "someone-elses")
	wpPod := runningPod(t, cs, "wpca", "wp-1", "wp", "w1", "10.244.41.5")
	appPod := runningPod(t, cs, "wpca", "app-1", "app", "w1", "10.244.41.6")
	otherPod := runningPod(t, cs, "wpca-other", "wp-1", "wp", "w1", "10.244.41.7")

	authority, err := ca.NewRoot(ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signer := &ca.Signer{
		CA:    authority,
		Authn: &ca.TokenReviewer{Reviews: cs.AuthenticationV1().TokenReviews()},
		// No pod is scheduled as far as this model knows: a node's rule
		// allows nothing, so what is signed is by the waypoint rule.
		Authz:     ca.ModelAuthorizer{Model: func() *model.Model { return model.Build(model.Inputs{}) }},
		Callers:   []string{model.DefaultSystemNamespace + "/ztunnel"},
		Waypoints: gateway.Waypoints{Reader: kc},
		Log:       testLog(t),
	}
	if err := signer.Validate(); err != nil {
		t.Fatal(err)
	}
	wpTok, appTok, otherTok := podToken(t, cs, wpPod), podToken(t, cs, appPod), podToken(t, cs, otherPod)
	for _, tc := range []struct {
		name, token, id string
		want            ca.Reason
	}{
		{"waypoint gets its own identity", wpTok, "spiffe://cluster.local/ns/wpca/sa/wp", ""},
		{"waypoint refused another service account", wpTok, "spiffe://cluster.local/ns/wpca/sa/app", ca.ReasonNotOwnIdentity},
		{"waypoint refused its name in another namespace", wpTok, "spiffe://cluster.local/ns/wpca-other/sa/wp", ca.ReasonNotOwnIdentity},
		{"workload's own token refused its own identity", appTok, "spiffe://cluster.local/ns/wpca/sa/app", ca.ReasonCallerNotAllowed},
		{"workload's own token refused the waypoint's", appTok, "spiffe://cluster.local/ns/wpca/sa/wp", ca.ReasonCallerNotAllowed},
		{"Gateway of another class: no waypoint", otherTok, "spiffe://cluster.local/ns/wpca-other/sa/wp", ca.ReasonCallerNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, csr, err := svid.NewCSR(identity.MustParse(tc.id))
			if err != nil {
				t.Fatal(err)
			}
			chain, err := signer.SignCSR(ctx, tc.token, csr)
			if got := ca.ReasonOf(err); got != tc.want || (tc.want == "" && (err != nil || len(chain) == 0)) {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}
