package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// removalCheck decides, when the agent stops, whether Warren is being
// removed from the cluster (uninstall: links, pins, CNI entry) or the agent
// is only restarted or upgraded (leave everything for the next agent). It
// asks the API about the agent's own DaemonSet, found at start from its
// Pod's owner references, and that DaemonSet's namespace.
type removalCheck struct {
	client         kubernetes.Interface
	namespace, pod string
	log            *slog.Logger

	started chan struct{} // closed once the lookup at start is done; guards the fields below

	daemonSet string // the owning DaemonSet's name; "" until found
	noOwner   bool   // the pod was read and has no DaemonSet owner
	// readable: at start, the DaemonSet and the namespace could be read.
	// Only then does a later 401/403 mean that the ServiceAccount or its
	// RBAC went away with the rest of Warren, rather than were never there.
	readable bool
}

// newRemovalCheck starts looking up the agent's DaemonSet, in the
// background (the agent does not wait on the API to start), within timeout.
// Errors are logged, not returned: without an answer the agent leaves
// everything in place at exit.
func newRemovalCheck(ctx context.Context, client kubernetes.Interface, namespace, pod string, timeout time.Duration, log *slog.Logger) *removalCheck {
	c := &removalCheck{client: client, namespace: namespace, pod: pod, log: log, started: make(chan struct{})}
	go func() {
		defer close(c.started)
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c.start(ctx)
	}()
	return c
}

func (c *removalCheck) start(ctx context.Context) {
	if c.pod == "" {
		c.log.Info("no pod name (--pod-name): redirection stays in place when the agent stops")
		return
	}
	if err := c.findOwner(ctx); err != nil {
		c.log.Warn("cannot tell whether Warren is removed when the agent stops; it will ask again then", "err", err)
		return
	}
	if c.noOwner {
		c.log.Info("the agent's pod has no DaemonSet owner: redirection stays in place when it stops", "pod", c.namespace+"/"+c.pod)
		return
	}
	_, dsErr := c.client.AppsV1().DaemonSets(c.namespace).Get(ctx, c.daemonSet, metav1.GetOptions{})
	_, nsErr := c.client.CoreV1().Namespaces().Get(ctx, c.namespace, metav1.GetOptions{})
	if dsErr != nil || nsErr != nil {
		c.log.Warn("cannot read the agent's DaemonSet or namespace (RBAC: get on apps/daemonsets and namespaces): when the agent stops, denied access will not count as Warren removed",
			"daemonset", c.namespace+"/"+c.daemonSet, "daemonset_err", dsErr, "namespace_err", nsErr)
	}
	c.readable = dsErr == nil && nsErr == nil
	c.log.Info("the agent uninstalls itself when its DaemonSet or namespace is deleted", "daemonset", c.namespace+"/"+c.daemonSet)
}

func (c *removalCheck) findOwner(ctx context.Context) error {
	if c.namespace == "" {
		return fmt.Errorf("pod %s: namespace missing (--pod-namespace)", c.pod)
	}
	p, err := c.client.CoreV1().Pods(c.namespace).Get(ctx, c.pod, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the agent's pod %s/%s: %w", c.namespace, c.pod, err)
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.APIVersion == "apps/v1" {
			c.daemonSet = o.Name
			return nil
		}
	}
	c.noOwner = true
	return nil
}

// decide tells whether to uninstall, and why.
func (c *removalCheck) decide(ctx context.Context) (uninstall bool, why string) {
	select {
	case <-c.started:
	case <-ctx.Done():
		return false, "the lookup at start has not finished: cannot tell"
	}
	if c.pod == "" {
		return false, "no pod name: not running as a Kubernetes pod"
	}
	if c.daemonSet == "" && !c.noOwner {
		if err := c.findOwner(ctx); err != nil {
			return false, "cannot find the agent's DaemonSet: " + err.Error()
		}
	}
	if c.noOwner {
		return false, "the agent's pod has no DaemonSet owner"
	}
	dsName := c.namespace + "/" + c.daemonSet
	denied := func(what string, err error) (bool, string) {
		if c.readable {
			return true, fmt.Sprintf("%s: access denied, which it was not at start: the ServiceAccount or its RBAC was removed (%v)", what, err)
		}
		return false, fmt.Sprintf("%s: access denied, as at start (RBAC missing?): cannot tell (%v)", what, err)
	}
	ds, err := c.client.AppsV1().DaemonSets(c.namespace).Get(ctx, c.daemonSet, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, "DaemonSet " + dsName + " is gone"
	case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
		return denied("DaemonSet "+dsName, err)
	case err != nil:
		return false, fmt.Sprintf("DaemonSet %s: %v: cannot tell", dsName, err)
	case ds.DeletionTimestamp != nil:
		return true, "DaemonSet " + dsName + " is being deleted"
	}
	ns, err := c.client.CoreV1().Namespaces().Get(ctx, c.namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, "namespace " + c.namespace + " is gone"
	case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
		return denied("namespace "+c.namespace, err)
	case err != nil:
		return false, fmt.Sprintf("namespace %s: %v: cannot tell", c.namespace, err)
	case ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating:
		return true, "namespace " + c.namespace + " is being deleted"
	}
	return false, "DaemonSet " + dsName + " is still there: a restart or an upgrade"
}
