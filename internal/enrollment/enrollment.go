// Package enrollment is the one rule that says which pods are in the mesh,
// from the labels of the pod and of its namespace. The node agent (which
// redirects a pod's traffic) and the controller (which tells every ztunnel
// which pods to reach over HBONE) both decide with ShouldEnroll, so they
// cannot disagree. It works on plain label maps and needs no client-go.
package enrollment

import "fmt"

// The label and its values.
const (
	// Label on a namespace enrolls its pods (Enabled); on a pod, Disabled
	// opts that pod out (Enabled is allowed and changes nothing).
	Label    = "warren.dev/mesh"
	Enabled  = "enabled"
	Disabled = "disabled"
)

// LabelError is a label value that is neither Enabled nor Disabled.
type LabelError struct {
	// Object is "pod" or "namespace".
	Object string
	Value  string
}

func (e *LabelError) Error() string {
	return fmt.Sprintf("label %s=%q: want %q or %q", Label, e.Value, Enabled, Disabled)
}

// ShouldEnroll reports whether a pod with podLabels, in a namespace with
// nsLabels, is enrolled: the namespace has warren.dev/mesh=enabled and the
// pod does not have warren.dev/mesh=disabled. Any other value of either
// label is a *LabelError, and the pod is then not enrolled: an operator's
// typo must not silently change where traffic goes, and enrolling on a typo
// would break pods that meant to opt out (warren.dev/mesh=Disabled). A nil
// map is a map without the label.
func ShouldEnroll(nsLabels, podLabels map[string]string) (bool, error) {
	switch v, ok := podLabels[Label]; {
	case !ok, v == Enabled:
	case v == Disabled:
		return false, nil
	default:
		return false, &LabelError{Object: "pod", Value: v}
	}
	switch v, ok := nsLabels[Label]; {
	case !ok, v == Disabled:
		return false, nil
	case v == Enabled:
		return true, nil
	default:
		return false, &LabelError{Object: "namespace", Value: v}
	}
}
