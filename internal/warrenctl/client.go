package warrenctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients are the API clients of one cluster.
type Clients struct {
	Config  *rest.Config
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// Fetch reads path from port of a pod (the ztunnels' admin and metrics
	// ports); FetchThroughForward unless a test replaces it.
	Fetch Fetcher
}

// LoadConfig reads the kubeconfig kubectl would: path if set, else
// $KUBECONFIG, else ~/.kube/config; and context if set, else its current one.
func LoadConfig(path, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w (set --kubeconfig or $KUBECONFIG, and --context)", err)
	}
	return cfg, nil
}

// NewClients makes the clients of cfg.
func NewClients(cfg *rest.Config) (*Clients, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Clients{Config: cfg, Kube: kube, Dynamic: dyn, Fetch: FetchThroughForward(cfg)}, nil
}

// Reachable asks the API server its version, and explains a failure.
func (c *Clients) Reachable(ctx context.Context) (string, error) {
	v, err := c.Kube.Discovery().ServerVersion()
	if err != nil {
		return "", Explain(err, "reach the Kubernetes API server")
	}
	_ = ctx
	return v.GitVersion, nil
}

// RequireWarren fails with what to do when Warren's namespace or node
// DaemonSet is not there.
func (c *Clients) RequireWarren(ctx context.Context) error {
	if _, err := c.Kube.CoreV1().Namespaces().Get(ctx, SystemNamespace, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("warren is not installed in this cluster (no namespace %s): run warrenctl install", SystemNamespace)
		}
		return Explain(err, "read namespace "+SystemNamespace)
	}
	return nil
}

// Explain turns an API error into one line saying what failed and what to do.
func Explain(err error, doing string) error {
	if err == nil {
		return nil
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("cannot %s: forbidden (%s); ask for RBAC that allows it, or use another --context", doing, short(err))
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("cannot %s: unauthorized; your credentials were refused, log in again or use another --context", doing)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("cannot %s: %s", doing, short(err))
	case unreachable(err):
		return fmt.Errorf("cannot %s: the API server is unreachable (%s); check --kubeconfig/--context and that the cluster is up", doing, short(err))
	}
	return fmt.Errorf("cannot %s: %s", doing, short(err))
}

func unreachable(err error) bool {
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	var de *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &oe) || errors.As(err, &de) ||
		(errors.As(err, &ue) && errors.As(err, &ne)) || errors.Is(err, context.DeadlineExceeded)
}

// short is an error on one line.
func short(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
