// Package controller watches Kubernetes (Namespaces, Pods, Services,
// EndpointSlices and Warren's policies) through a controller-runtime cache,
// rebuilds the mesh model from it, publishes the model to the parts that
// serve it (the CA's authorizer, and later the distribution API), and writes
// each policy's Accepted condition.
//
// There is one work item, the whole mesh: every event only marks it dirty,
// and a sync rebuilds the model from the cache, so the result depends only on
// the current objects (level-based) and a burst of events costs one rebuild.
// Every replica builds and serves the model; only the leader writes status.
package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/identity"
)

// Config is the controller's configuration.
type Config struct {
	// TrustDomain defaults to cluster.local.
	TrustDomain string
	// SystemNamespace defaults to warren-system.
	SystemNamespace string
	// RetryDelay is the first delay after a failed sync (doubling up to a
	// minute); default 100 ms.
	RetryDelay time.Duration
	Log        *slog.Logger
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	c.TrustDomain = cmp.Or(c.TrustDomain, identity.DefaultTrustDomain)
	c.SystemNamespace = cmp.Or(c.SystemNamespace, model.DefaultSystemNamespace)
	c.RetryDelay = cmp.Or(c.RetryDelay, 100*time.Millisecond)
	if c.Log == nil {
		return errors.New("controller: no logger")
	}
	return nil
}

// Controller keeps the model current. Add it to a manager with mgr.Add.
type Controller struct {
	cfg     Config
	cache   client.Reader
	client  client.Client
	elected <-chan struct{}
	mgr     manager.Manager
	dirty   chan struct{}
	model   atomic.Pointer[model.Model]
	// published is closed after the first model is published.
	published chan struct{}
	version   atomic.Uint64
	listeners []func(*model.Model)
	// gatewayAPI: the Gateway API CRDs were installed at start, so routes,
	// ReferenceGrants and Gateways are watched (decided once).
	gatewayAPI bool
}

// watched are the kinds the model is built from.
func watched() []client.Object {
	return []client.Object{&corev1.Namespace{}, &corev1.Pod{}, &corev1.Service{}, &discoveryv1.EndpointSlice{},
		&v1alpha1.AuthorizationPolicy{}, &v1alpha1.PeerAuthentication{}}
}

// gatewayKinds are the Gateway API kinds the model reads when their CRDs
// are installed.
func gatewayKinds() []client.Object {
	return []client.Object{&gwv1.HTTPRoute{}, &gwv1.GRPCRoute{}, &gwv1.ReferenceGrant{}, &gwv1.Gateway{}}
}

// gatewayAPIError says why the Gateway API kinds cannot be watched: the
// manager's scheme lacks them or their CRDs are not installed (the same
// guard as setupWaypoints). nil: they can.
func gatewayAPIError(mgr manager.Manager) error {
	for _, obj := range gatewayKinds() {
		gvk, err := apiutil.GVKForObject(obj, mgr.GetScheme())
		if err != nil {
			return err
		}
		if _, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return err
		}
	}
	return nil
}

// New returns a controller on mgr's cache and client. mgr's scheme must know
// core/v1, discovery/v1 and warren.dev/v1alpha1.
func New(mgr manager.Manager, cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{
		cfg: cfg, mgr: mgr, cache: mgr.GetCache(), client: mgr.GetClient(), elected: mgr.Elected(),
		dirty: make(chan struct{}, 1), published: make(chan struct{}),
	}
	if err := gatewayAPIError(mgr); err != nil {
		cfg.Log.Warn("Gateway API not available: no routes until its CRDs are installed and the controller restarts", "err", err)
	} else {
		c.gatewayAPI = true
	}
	return c, nil
}

// OnModel registers f to be called, from the sync goroutine, with every new
// model. Call it before Start.
func (c *Controller) OnModel(f func(*model.Model)) { c.listeners = append(c.listeners, f) }

// Model returns the current model, nil before the caches have synced.
func (c *Controller) Model() *model.Model { return c.model.Load() }

// Version counts the models published.
func (c *Controller) Version() uint64 { return c.version.Load() }

// Published is closed once the first model is published.
func (c *Controller) Published() <-chan struct{} { return c.published }

// NeedLeaderElection is false: every replica serves the model. Status
// writes check leadership themselves.
func (c *Controller) NeedLeaderElection() bool { return false }

func (c *Controller) markDirty() {
	select {
	case c.dirty <- struct{}{}:
	default: // already marked; the next sync sees this change too
	}
}

// Start runs until ctx ends. It implements manager.Runnable.
func (c *Controller) Start(ctx context.Context) error {
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.markDirty() },
		UpdateFunc: func(any, any) { c.markDirty() },
		DeleteFunc: func(any) { c.markDirty() },
	}
	objs := watched()
	if c.gatewayAPI {
		objs = append(objs, gatewayKinds()...)
	}
	for _, obj := range objs {
		inf, err := c.mgr.GetCache().GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("event handler for %T: %w", obj, err)
		}
	}
	if !c.mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("wait for caches: %w", ctx.Err())
	}
	c.cfg.Log.Info("caches synced")
	go func() {
		// A replica that becomes leader writes the statuses it now owns.
		select {
		case <-c.elected:
			c.markDirty()
		case <-ctx.Done():
		}
	}()
	c.markDirty()
	delay := c.cfg.RetryDelay
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.dirty:
		}
		if err := c.sync(ctx); err != nil {
			c.cfg.Log.Warn("sync failed, retrying", "err", err, "in", delay)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Minute)
			c.markDirty()
			continue
		}
		delay = c.cfg.RetryDelay
	}
}

func (c *Controller) sync(ctx context.Context) error {
	in, err := c.list(ctx)
	if err != nil {
		return err
	}
	m := model.Build(in)
	reportLabelErrors(c.cfg.Log, c.model.Load(), m)
	c.model.Store(m)
	v := c.version.Add(1)
	if v == 1 {
		close(c.published)
	}
	for _, f := range c.listeners {
		f(m)
	}
	select {
	case <-c.elected:
		return c.writeStatus(ctx, m, in)
	default:
		return nil
	}
}

// reportLabelErrors logs, once, each pod left out of the mesh by a malformed
// warren.dev/mesh label (the node agent refuses it too): new in m, or with
// another message than in prev.
func reportLabelErrors(log *slog.Logger, prev, m *model.Model) {
	for uid, msg := range m.LabelErrors {
		if prev != nil && prev.LabelErrors[uid] == msg {
			continue
		}
		log.Warn("malformed enrollment label", "pod_uid", uid, "err", msg)
	}
}

func (c *Controller) list(ctx context.Context) (model.Inputs, error) {
	in := model.Inputs{TrustDomain: c.cfg.TrustDomain, SystemNamespace: c.cfg.SystemNamespace}
	var (
		nss  corev1.NamespaceList
		pods corev1.PodList
		svcs corev1.ServiceList
		eps  discoveryv1.EndpointSliceList
		aps  v1alpha1.AuthorizationPolicyList
		pas  v1alpha1.PeerAuthenticationList
	)
	for _, l := range []client.ObjectList{&nss, &pods, &svcs, &eps, &aps, &pas} {
		// Reads from the cache return shared objects: nothing below mutates
		// them, and writeStatus copies before it changes one.
		if err := c.cache.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			return in, fmt.Errorf("list %T: %w", l, err)
		}
	}
	in.Namespaces = ptrs(nss.Items)
	in.Pods = ptrs(pods.Items)
	in.Services = ptrs(svcs.Items)
	in.EndpointSlices = ptrs(eps.Items)
	in.AuthorizationPolicies = ptrs(aps.Items)
	in.PeerAuthentications = ptrs(pas.Items)
	if !c.gatewayAPI {
		return in, nil
	}
	var (
		hrs gwv1.HTTPRouteList
		grs gwv1.GRPCRouteList
		rgs gwv1.ReferenceGrantList
		gws gwv1.GatewayList
	)
	if err := c.listAll(ctx, &hrs, &grs, &rgs, &gws); err != nil {
		return in, err
	}
	in.HTTPRoutes = ptrs(hrs.Items)
	in.GRPCRoutes = ptrs(grs.Items)
	in.ReferenceGrants = ptrs(rgs.Items)
	in.Gateways = ptrs(gws.Items)
	return in, nil
}

// listAll lists each of ls from the cache, without copies: the model only
// reads them.
func (c *Controller) listAll(ctx context.Context, ls ...client.ObjectList) error {
	for _, l := range ls {
		if err := c.cache.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("list %T: %w", l, err)
		}
	}
	return nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
