package warrenctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// PollInterval is how often install and uninstall look at what they wait for.
var PollInterval = time.Second

// WriteYAML prints objects as one YAML stream (install --dry-run).
func WriteYAML(w io.Writer, objs []*unstructured.Unstructured) error {
	for i, o := range objs {
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

type applier struct {
	c      *Clients
	mapper meta.ResettableRESTMapper
}

func newApplier(c *Clients) *applier {
	return &applier{c: c, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Kube.Discovery()))}
}

func (a *applier) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, Explain(err, "find the API of "+gvk.Kind)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.c.Dynamic.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return a.c.Dynamic.Resource(m.Resource), nil
}

func describe(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return o.GetKind() + " " + ns + "/" + o.GetName()
	}
	return o.GetKind() + " " + o.GetName()
}

// Install applies objs in order, server-side with field manager warrenctl,
// and waits, within ctx, for each part to be ready: the CRDs established
// (before anything after them is applied), the controller Deployment
// available, the node DaemonSet rolled out on every node. It prints its
// progress to out.
func Install(ctx context.Context, c *Clients, objs []*unstructured.Unstructured, out io.Writer) error {
	if _, err := c.Reachable(ctx); err != nil {
		return err
	}
	a := newApplier(c)
	var crds []string
	for i, o := range objs {
		if err := a.apply(ctx, o, out); err != nil {
			return err
		}
		isCRD := o.GetKind() == "CustomResourceDefinition"
		if isCRD {
			crds = append(crds, o.GetName())
		}
		// After the last CRD of a run: they must be established (served)
		// before anything that may use them goes in.
		if isCRD && (i+1 == len(objs) || objs[i+1].GetKind() != "CustomResourceDefinition") {
			if err := waitCRDs(ctx, c, crds, out); err != nil {
				return err
			}
			a.mapper.Reset()
		}
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			if err := waitDeployment(ctx, c, o.GetNamespace(), o.GetName(), out); err != nil {
				return err
			}
		case "DaemonSet":
			if err := waitDaemonSet(ctx, c, o.GetNamespace(), o.GetName(), out); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(out, "Warren is installed: run warrenctl check, then warrenctl enroll NAMESPACE")
	return nil
}

func (a *applier) apply(ctx context.Context, o *unstructured.Unstructured, out io.Writer) error {
	r, err := a.resource(o)
	if err != nil {
		return err
	}
	if _, err := r.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return Explain(err, "apply "+describe(o))
	}
	fmt.Fprintf(out, "applied %s\n", describe(o))
	return nil
}

// poll runs cond every PollInterval until it is done, ctx ends (the
// error then carries cond's last reason and the hint), or it fails.
func poll(ctx context.Context, what, hint string, cond func(context.Context) (done bool, reason string, err error)) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, PollInterval, true, func(ctx context.Context) (bool, error) {
		done, reason, err := cond(ctx)
		last = reason
		return done, err
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("timed out waiting for %s (last seen: %s); see %s", what, last, hint)
	}
	return err
}

func waitCRDs(ctx context.Context, c *Clients, names []string, out io.Writer) error {
	for _, n := range names {
		err := poll(ctx, "CRD "+n+" to be established", "kubectl describe crd "+n, func(ctx context.Context) (bool, string, error) {
			crd, err := c.Dynamic.Resource(CRDResource).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, short(err), nil
			}
			r := CRDResult(n, crd)
			return r.Status == OK, r.Detail, nil
		})
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "√ CRDs established (%d)\n", len(names))
	return nil
}

func waitDeployment(ctx context.Context, c *Clients, ns, name string, out io.Writer) error {
	var detail string
	hint := fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", ns, name, ns, name)
	err := poll(ctx, "Deployment "+ns+"/"+name+" to be available", hint, func(ctx context.Context) (bool, string, error) {
		d, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, short(err), nil
		}
		r := DeploymentResult(d)
		detail = r.Detail
		return r.Status == OK, r.Detail, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "√ Deployment %s available (%s)\n", name, detail)
	return nil
}

func waitDaemonSet(ctx context.Context, c *Clients, ns, name string, out io.Writer) error {
	var detail string
	hint := fmt.Sprintf("kubectl -n %s get pods -l %s -o wide; kubectl -n %s logs ds/%s -c agent (and -c ztunnel)", ns, NodeSelector, ns, name)
	err := poll(ctx, "DaemonSet "+ns+"/"+name+" to roll out on every node", hint, func(ctx context.Context) (bool, string, error) {
		ds, err := c.Kube.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, short(err), nil
		}
		nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, short(err), nil
		}
		r := DaemonSetResult(ds, len(nodes.Items))
		detail = r.Detail
		return r.Status == OK, r.Detail, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "√ DaemonSet %s rolled out (%s)\n", name, detail)
	return nil
}

// Uninstall deletes objs in reverse order; after the node DaemonSet it
// waits, within ctx, for its pods to be gone (the agents clean their nodes
// on the way out) before the rest goes.
func Uninstall(ctx context.Context, c *Clients, objs []*unstructured.Unstructured, out io.Writer) error {
	if _, err := c.Reachable(ctx); err != nil {
		return err
	}
	a := newApplier(c)
	bg := metav1.DeletePropagationBackground
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		r, err := a.resource(o)
		if err != nil {
			if meta.IsNoMatchError(errors.Unwrap(err)) || meta.IsNoMatchError(err) {
				fmt.Fprintf(out, "absent %s\n", describe(o))
				continue
			}
			return err
		}
		err = r.Delete(ctx, o.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg})
		switch {
		case apierrors.IsNotFound(err):
			fmt.Fprintf(out, "absent %s\n", describe(o))
			continue
		case err != nil:
			return Explain(err, "delete "+describe(o))
		}
		fmt.Fprintf(out, "deleted %s\n", describe(o))
		if o.GetKind() == "DaemonSet" {
			if err := waitPodsGone(ctx, c, o, out); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(out, "Warren is uninstalled")
	return nil
}

func waitPodsGone(ctx context.Context, c *Clients, ds *unstructured.Unstructured, out io.Writer) error {
	sel, _, _ := unstructured.NestedStringMap(ds.Object, "spec", "selector", "matchLabels")
	selector := metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: sel})
	ns := ds.GetNamespace()
	hint := fmt.Sprintf("kubectl -n %s get pods -l %s -o wide; kubectl -n %s logs POD -c agent", ns, selector, ns)
	err := poll(ctx, "the "+ds.GetName()+" pods to stop", hint, func(ctx context.Context) (bool, string, error) {
		pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, short(err), nil
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods left", len(pods.Items)), nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "√ %s pods gone (the agents cleaned their nodes)\n", ds.GetName())
	return nil
}
