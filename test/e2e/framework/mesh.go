package framework

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// SystemNamespace is where Warren is installed.
const SystemNamespace = "warren-system"

// InstallMesh applies manifests/ (kubectl apply -k, with the images built from this tree) and
// waits until the controller and the node DaemonSet are rolled out. Applying again is a no-op.
func (c *Cluster) InstallMesh(t testing.TB) {
	t.Helper()
	dir, err := c.Config.MeshOverlay()
	if err != nil {
		t.Fatalf("mesh overlay: %v", err)
	}
	if out, err := c.Config.Kubectl(context.Background(), nil, "apply", "-k", dir); err != nil {
		t.Fatalf("kubectl apply -k manifests: %v\n%s", err, out)
	}
	c.WaitDeployment(t, SystemNamespace, "warren-controller", 3*time.Minute)
	c.WaitDaemonSet(t, SystemNamespace, "warren-node", 3*time.Minute)
}

// UninstallMesh deletes what InstallMesh applied (kubectl delete -k) and waits until the
// system namespace is gone.
func (c *Cluster) UninstallMesh(t testing.TB) {
	t.Helper()
	dir, err := c.Config.MeshOverlay()
	if err != nil {
		t.Fatalf("mesh overlay: %v", err)
	}
	if out, err := c.Config.Kubectl(context.Background(), nil, "delete", "-k", dir, "--ignore-not-found", "--wait=false"); err != nil {
		t.Fatalf("kubectl delete -k manifests: %v\n%s", err, out)
	}
	c.poll(t, 3*time.Minute, "namespace "+SystemNamespace+" deleted", func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, SystemNamespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// Label sets (value non-empty) or removes (value "") a label of a namespace.
func (c *Cluster) Label(t testing.TB, ns, key, value string) {
	t.Helper()
	v := "null"
	if value != "" {
		v = fmt.Sprintf("%q", value)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	if _, err := c.Client.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

// NodeExec runs a command in a node's mount and network namespaces.
func (c *Cluster) NodeExec(ctx context.Context, node string, args ...string) (string, error) {
	return c.Config.NodeExec(ctx, node, args...)
}

// NodeGet fetches an http URL from inside a node's network namespace (the ztunnel's and the
// agent's ports are on the node).
func (c *Cluster) NodeGet(ctx context.Context, node, url string) (string, error) {
	out, err := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/warren-"+node, "--",
		"curl", "-sS", "--fail", "--max-time", "5", url).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("GET %s on %s: %w: %s", url, node, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Eventually polls f every 250 ms until it returns nil or timeout passes, then fails the
// test with f's last error.
func (c *Cluster) Eventually(t testing.TB, timeout time.Duration, what string, f func(context.Context) error) {
	t.Helper()
	c.poll(t, timeout, what, func(ctx context.Context) (bool, error) {
		err := f(ctx)
		return err == nil, err
	})
}

// ExecStdout runs a command in a pod's first container and returns its standard output alone
// (Exec mixes in standard error); standard error is in the error when the command fails.
func (c *Cluster) ExecStdout(ctx context.Context, ns, pod string, cmd ...string) (string, error) {
	var stdout, stderr strings.Builder
	k := exec.CommandContext(ctx, c.Config.Bin("kubectl"), append([]string{"--kubeconfig", c.Config.KubeconfigPath(), "exec", "-n", ns, pod, "--"}, cmd...)...)
	k.Stdout, k.Stderr = &stdout, &stderr
	if err := k.Run(); err != nil {
		return stdout.String(), fmt.Errorf("exec %s in %s/%s: %w: %s", strings.Join(cmd, " "), ns, pod, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
