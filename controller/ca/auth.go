package ca

import (
	"context"
	"fmt"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/identity"
)

// Caller is an authenticated requester: a pod's service account, and the
// node the pod runs on.
type Caller struct {
	Namespace      string
	ServiceAccount string
	Pod            string
	Node           string
}

// Authenticator turns a bearer token into a Caller.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Caller, error)
}

// Authorizer decides whether a caller on node may have id.
type Authorizer interface {
	Authorize(ctx context.Context, node string, id identity.ID) error
}

// The user-info extras the apiserver puts on pod-bound service account tokens.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// TokenReviewer authenticates with the apiserver's TokenReview API. Only
// tokens bound to a pod that runs on a node are accepted (projected
// service account tokens; Kubernetes ≥ 1.32 records the node in them), since
// the node is what the Authorizer decides on.
type TokenReviewer struct {
	Reviews authnclient.TokenReviewInterface
	// Audiences the token must be for; empty: the apiserver's own.
	Audiences []string
}

// Authenticate implements Authenticator.
func (t *TokenReviewer) Authenticate(ctx context.Context, token string) (Caller, error) {
	if token == "" {
		return Caller{}, deny(ReasonUnauthenticated, "no token")
	}
	tr, err := t.Reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: t.Audiences}}, metav1.CreateOptions{})
	if err != nil {
		// Not a denial: the apiserver is unreachable, the caller may retry.
		return Caller{}, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return Caller{}, deny(ReasonUnauthenticated, "token review: %s", strings.TrimSpace(tr.Status.Error))
	}
	u := tr.Status.User
	rest, ok := strings.CutPrefix(u.Username, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return Caller{}, deny(ReasonUnauthenticated, "%q is not a service account", u.Username)
	}
	c := Caller{Namespace: ns, ServiceAccount: sa}
	if v := u.Extra[extraPodName]; len(v) == 1 {
		c.Pod = v[0]
	}
	if v := u.Extra[extraNodeName]; len(v) == 1 {
		c.Node = v[0]
	}
	if c.Pod == "" || c.Node == "" {
		return Caller{}, deny(ReasonUnauthenticated, "token of %s/%s is not bound to a pod on a node", ns, sa)
	}
	return c, nil
}

// ModelAuthorizer allows an identity on a node when the model has a running
// pod of that service account there.
type ModelAuthorizer struct {
	// Model returns the current model; nil before the first build, which
	// denies everything.
	Model func() *model.Model
}

// Authorize implements Authorizer.
func (a ModelAuthorizer) Authorize(_ context.Context, node string, id identity.ID) error {
	m := a.Model()
	if m == nil {
		return deny(ReasonNotOnNode, "the controller has not synced its caches yet")
	}
	if !m.Scheduled(node, id) {
		return deny(ReasonNotOnNode, "no pod of service account %s/%s is scheduled on node %q (or all have finished)", id.Namespace, id.ServiceAccount, node)
	}
	return nil
}
