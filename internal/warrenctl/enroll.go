package warrenctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Enroll sets (enable) or removes the namespace's warren.dev/mesh label and
// prints what changed.
func Enroll(ctx context.Context, c *Clients, namespace string, enable bool, out io.Writer) error {
	ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %q not found: see kubectl get namespaces", namespace)
	}
	if err != nil {
		return Explain(err, "read namespace "+namespace)
	}
	before, had := ns.Labels[MeshLabel]
	var value any // nil removes the label
	want := ""
	if enable {
		value, want = "enabled", "enabled"
	}
	if (enable && before == want) || (!enable && !had) {
		fmt.Fprintf(out, "namespace %s: unchanged (%s)\n", namespace, describeLabel(before, had))
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{MeshLabel: value}}})
	if err != nil {
		return err
	}
	if _, err := c.Kube.CoreV1().Namespaces().Patch(ctx, namespace, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return Explain(err, "label namespace "+namespace)
	}
	fmt.Fprintf(out, "namespace %s: %s -> %s\n", namespace, describeLabel(before, had), describeLabel(want, enable))
	return nil
}

func describeLabel(v string, set bool) string {
	if !set {
		return MeshLabel + " unset"
	}
	return MeshLabel + "=" + v
}

// FieldManager is warrenctl's name in managedFields.
const FieldManager = "warrenctl"
