package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/model"
)

// writeStatus sets the Accepted condition of every policy whose condition
// differs from the model's verdict. Unchanged objects cost no write, so a
// resync of a quiet cluster writes nothing.
func (c *Controller) writeStatus(ctx context.Context, m *model.Model, in model.Inputs) error {
	var errs []error
	for _, ap := range in.AuthorizationPolicies {
		v, ok := m.AuthzVerdicts[model.Key{Namespace: ap.Namespace, Name: ap.Name}]
		if !ok {
			continue
		}
		if cond, changed := condition(ap.Status, ap.Generation, v); changed {
			obj := ap.DeepCopy()
			meta.SetStatusCondition(&obj.Status.Conditions, cond)
			obj.Status.ObservedGeneration = ap.Generation
			errs = append(errs, c.updateStatus(ctx, obj, v))
		}
	}
	for _, pa := range in.PeerAuthentications {
		v, ok := m.PeerAuthVerdicts[model.Key{Namespace: pa.Namespace, Name: pa.Name}]
		if !ok {
			continue
		}
		if cond, changed := condition(pa.Status, pa.Generation, v); changed {
			obj := pa.DeepCopy()
			meta.SetStatusCondition(&obj.Status.Conditions, cond)
			obj.Status.ObservedGeneration = pa.Generation
			errs = append(errs, c.updateStatus(ctx, obj, v))
		}
	}
	errs = append(errs, c.writeRouteStatus(ctx, m, in))
	return errors.Join(errs...)
}

func (c *Controller) updateStatus(ctx context.Context, obj client.Object, v model.Verdict) error {
	// Update (not patch) so that a stale cached object fails with a
	// conflict instead of overwriting a newer generation's status; the
	// retry then works from the fresh object.
	if err := c.client.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("status of %s %s/%s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetNamespace(), obj.GetName(), err)
	}
	c.cfg.Log.Info("policy status written", "kind", fmt.Sprintf("%T", obj), "namespace", obj.GetNamespace(), "name", obj.GetName(),
		"accepted", v.Accepted, "reason", v.Reason)
	return nil
}

// condition returns the Accepted condition for v and whether it differs
// from what status already says for generation.
func condition(st v1alpha1.PolicyStatus, generation int64, v model.Verdict) (metav1.Condition, bool) {
	cond := metav1.Condition{
		Type:               v1alpha1.ConditionAccepted,
		Status:             metav1.ConditionFalse,
		Reason:             v.Reason,
		Message:            truncate(v.Message, 1024),
		ObservedGeneration: generation,
	}
	if v.Accepted {
		cond.Status = metav1.ConditionTrue
	}
	cur := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAccepted)
	changed := cur == nil || cur.Status != cond.Status || cur.Reason != cond.Reason || cur.Message != cond.Message ||
		cur.ObservedGeneration != generation || st.ObservedGeneration != generation
	return cond, changed
}

// truncate keeps a condition message readable (the API allows 32 KiB; a
// policy with hundreds of bad principals would get there).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-len(" …")] + " …"
}
