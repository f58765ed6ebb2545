package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// TunnelPod is what the tunnel is told about an enrolled pod.
type TunnelPod struct {
	UID, Namespace, Name string
	IPs                  []netip.Addr
	// ServiceAccount and Labels make the pod's identity and select its policies.
	ServiceAccount string
	Labels         map[string]string
	// Netns is the path of the pod's network namespace, opened by the
	// receiver at once (a /proc/PID path is only good while PID lives).
	Netns string
}

// Tunnel is the node's ztunnel as the reconciler sees it: told of every pod
// enrolled and unenrolled (package zds implements it over a Unix socket).
// Both are idempotent.
type Tunnel interface {
	AddPod(ctx context.Context, pod TunnelPod) error
	DeletePod(ctx context.Context, uid string) error
}

// NetnsFinder finds the network namespace of a running pod on this node.
type NetnsFinder interface {
	// PodNetns returns a path to the pod's netns, or an error wrapping
	// ErrNetnsNotFound.
	PodNetns(uid string) (string, error)
}

// ErrNetnsNotFound: no process of the pod was found (yet).
var ErrNetnsNotFound = errors.New("pod network namespace not found")

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	Node      string
	Client    kubernetes.Interface
	Dataplane Dataplane
	// Tunnel is told of enrolled pods; none if nil.
	Tunnel Tunnel
	// Netns finds running pods' netns (ProcNetnsFinder in production).
	Netns NetnsFinder
	// Workers is the number of pods synced at once; 2 if zero.
	Workers int
	// Resync is the informers' resync period; none if zero.
	Resync time.Duration
	Logger *slog.Logger
}

// Validate checks the configuration.
func (c *ReconcilerConfig) Validate() error {
	switch {
	case c.Node == "":
		return errors.New("reconciler: node name missing")
	case c.Client == nil:
		return errors.New("reconciler: kubernetes client missing")
	case c.Dataplane == nil:
		return errors.New("reconciler: dataplane missing")
	case c.Netns == nil:
		return errors.New("reconciler: netns finder missing")
	}
	return nil
}

// Reconciler keeps the dataplane in line with the pods of one node: a
// level-based sync per pod key (namespace/name), driven by informers on this
// node's pods and on namespaces. It also serves the CNI plugin's requests.
//
// Locking: the workqueue never hands one key to two workers, and a pod's
// lock (lockPod, by UID) keeps a sync and a CNI call for the same pod apart.
// mu guards the maps only and is never held across I/O (kernel, tunnel,
// apiserver, /proc), so pods are enrolled in parallel and a CNI ADD never
// waits for another pod.
type Reconciler struct {
	cfg   ReconcilerConfig
	log   *slog.Logger
	queue workqueue.TypedRateLimitingInterface[string]

	podFactory, nsFactory informers.SharedInformerFactory
	pods                  corelisters.PodLister
	namespaces            corelisters.NamespaceLister
	synced                []cache.InformerSynced

	mu sync.Mutex // guards the maps below; short sections only
	// state is what this agent put in the dataplane and told the tunnel,
	// by pod UID. An entry changes only under its pod's lock.
	state map[string]podRecord
	// cniNetns are netns paths the CNI plugin gave, by pod UID: the only
	// way to know a pod's netns before its first process runs.
	cniNetns map[string]string
	// podLocks are the pods' locks while someone holds or waits for one.
	podLocks map[string]*podLock
}

type podRecord struct {
	key string // namespace/name; "" for a pod adopted from the dataplane, not yet seen
	// containerID is the sandbox the CNI plugin enrolled, if it did.
	containerID string
	netns       string // "" until enrolled by this agent (adopted pods are enrolled again once)
	ips         []netip.Addr
	nodeIPs     []netip.Addr
}

type podLock struct {
	sync.Mutex
	refs int // holders and waiters, under Reconciler.mu
}

// lockPod takes the pod's lock, for the whole of one operation on it
// (its I/O included); it blocks only on the same pod. The caller holds no
// other pod's lock.
func (r *Reconciler) lockPod(uid string) (unlock func()) {
	r.mu.Lock()
	l := r.podLocks[uid]
	if l == nil {
		l = &podLock{}
		r.podLocks[uid] = l
	}
	l.refs++
	r.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		r.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(r.podLocks, uid)
		}
		r.mu.Unlock()
	}
}

// record returns the pod's record and the CNI's netns for it.
func (r *Reconciler) record(uid string) (rec podRecord, ok bool, cniNetns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok = r.state[uid]
	return rec, ok, r.cniNetns[uid]
}

// uidsOf returns the UIDs recorded under key (a pod and its replaced
// predecessors), but keepUID.
func (r *Reconciler) uidsOf(key, keepUID string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var uids []string
	for uid, rec := range r.state {
		if rec.key == key && uid != keepUID {
			uids = append(uids, uid)
		}
	}
	return uids
}

// NewReconciler builds the informers and the queue; Run starts them.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reconciler{
		cfg: cfg,
		log: cfg.Logger.With("node", cfg.Node),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
		state:    map[string]podRecord{},
		cniNetns: map[string]string{},
		podLocks: map[string]*podLock{},
	}
	// Only this node's pods: on a big cluster the agent must not hold them all.
	r.podFactory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.Node).String()
		}))
	r.nsFactory = informers.NewSharedInformerFactory(cfg.Client, cfg.Resync)
	podInf := r.podFactory.Core().V1().Pods()
	nsInf := r.nsFactory.Core().V1().Namespaces()
	r.pods, r.namespaces = podInf.Lister(), nsInf.Lister()
	r.synced = []cache.InformerSynced{podInf.Informer().HasSynced, nsInf.Informer().HasSynced}

	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	// A namespace's label decides for all its pods: enqueue each of them.
	nsChanged := func(obj any) {
		name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		pods, err := r.pods.Pods(name).List(labels.Everything())
		if err != nil {
			return
		}
		for _, p := range pods {
			r.queue.Add(p.Namespace + "/" + p.Name)
		}
	}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: nsChanged,
		UpdateFunc: func(old, obj any) {
			o, n := old.(*corev1.Namespace), obj.(*corev1.Namespace)
			if o.Labels[LabelMesh] != n.Labels[LabelMesh] {
				nsChanged(obj)
			}
		},
		DeleteFunc: nsChanged,
	}); err != nil {
		return nil, fmt.Errorf("namespace informer: %w", err)
	}
	return r, nil
}

// Run starts the informers, adopts what the dataplane already has, then
// syncs pods until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	defer r.queue.ShutDown()
	pods, err := r.cfg.Dataplane.Pods(ctx)
	if err != nil {
		return fmt.Errorf("reconciler: %w", err)
	}
	r.mu.Lock()
	for _, p := range pods {
		r.state[p.UID] = podRecord{ips: p.IPs, nodeIPs: p.NodeIPs}
	}
	r.mu.Unlock()

	r.podFactory.Start(ctx.Done())
	r.nsFactory.Start(ctx.Done())
	defer r.podFactory.Shutdown()
	defer r.nsFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("reconciler: informers not synced: %w", context.Cause(ctx))
	}
	if err := r.collectGone(ctx); err != nil {
		r.log.Warn("unenrolling pods gone while the agent was away", "err", err)
	}
	r.log.Info("reconciler started", "adopted_pods", len(pods))

	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			for r.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	r.queue.ShutDown()
	wg.Wait()
	return nil
}

// collectGone unenrolls the adopted pods that no longer exist on this node.
func (r *Reconciler) collectGone(ctx context.Context) error {
	pods, err := r.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName == r.cfg.Node {
			live[string(p.UID)] = true
		}
	}
	var errs []error
	for _, uid := range r.uidsOf("", "") {
		if !live[uid] {
			errs = append(errs, r.unenrollIfKey(ctx, uid, "", "pod gone"))
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) processNext(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.Sync(ctx, key); err != nil {
		r.log.Warn("pod sync failed, will retry", "pod", key, "err", err, "retries", r.queue.NumRequeues(key))
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// Sync brings one pod (namespace/name) to where its labels say, whatever
// happened before: safe to call any number of times, and at once for
// different keys (the workqueue never runs one key twice at once).
func (r *Reconciler) Sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not ours to retry
	}
	pod, err := r.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return r.unenrollKey(ctx, key, "", "pod deleted")
	}
	if err != nil {
		return err
	}
	// Another pod with the same name (a StatefulSet's next one) replaced it.
	uid := string(pod.UID)
	if err := r.unenrollKey(ctx, key, uid, "pod replaced"); err != nil {
		return err
	}
	d, err := r.decide(pod)
	if err != nil {
		r.log.Warn("pod not enrolled", "pod", key, "err", err)
	}
	unlock := r.lockPod(uid)
	defer unlock()
	switch d.Verdict {
	case Enroll:
		return r.enrollPod(ctx, pod, "", "")
	case Direct, Ignore:
		return r.unenrollPod(ctx, uid, d.Reason)
	}
	r.mu.Lock()
	if rec, ok := r.state[uid]; ok {
		rec.key = key
		r.state[uid] = rec
	}
	r.mu.Unlock()
	return nil
}

func (r *Reconciler) decide(pod *corev1.Pod) (Decision, error) {
	ns, err := r.namespaces.Get(pod.Namespace)
	if err != nil {
		ns = nil
	}
	return Decide(r.cfg.Node, ns, pod)
}

// enrollPod enrolls pod with its netns at netnsPath, or the one the CNI
// gave or a /proc scan finds when netnsPath is empty. The caller holds the
// pod's lock.
func (r *Reconciler) enrollPod(ctx context.Context, pod *corev1.Pod, netnsPath, containerID string) error {
	uid := string(pod.UID)
	key := pod.Namespace + "/" + pod.Name
	ips, err := PodIPs(pod)
	if err != nil {
		return err
	}
	nodeIPs := hostIPs(pod, ips)
	rec, have, cniNetns := r.record(uid)
	if netnsPath == "" {
		if have && rec.netns != "" {
			netnsPath = rec.netns
		} else if cniNetns != "" {
			netnsPath = cniNetns
		} else if netnsPath, err = r.cfg.Netns.PodNetns(uid); err != nil {
			return fmt.Errorf("pod %s: %w", key, err)
		}
	}
	if containerID == "" && have {
		containerID = rec.containerID
	}
	next := podRecord{key: key, netns: netnsPath, ips: ips, nodeIPs: nodeIPs, containerID: containerID}
	if have && rec.netns == netnsPath && slices.Equal(rec.ips, ips) && slices.Equal(rec.nodeIPs, nodeIPs) {
		r.setRecord(uid, next)
		return nil // already so
	}
	if err := r.cfg.Dataplane.Enroll(ctx, Pod{UID: uid, Netns: netnsPath, IPs: ips, NodeIPs: nodeIPs}); err != nil {
		return err
	}
	if r.cfg.Tunnel != nil {
		tp := TunnelPod{UID: uid, Namespace: pod.Namespace, Name: pod.Name, IPs: ips, Netns: netnsPath,
			ServiceAccount: pod.Spec.ServiceAccountName, Labels: pod.Labels}
		if err := r.cfg.Tunnel.AddPod(ctx, tp); err != nil {
			// Redirection is in place (fail closed); the tunnel gets the
			// pod with its next snapshot, or on this pod's retry (netns
			// left empty, so it is enrolled again).
			next.netns = ""
			r.setRecord(uid, next)
			return fmt.Errorf("pod %s: tell the tunnel: %w", key, err)
		}
	}
	r.setRecord(uid, next)
	r.log.Info("pod enrolled", "pod", key, "uid", uid, "netns", netnsPath, "ips", ips)
	return nil
}

func (r *Reconciler) setRecord(uid string, rec podRecord) {
	r.mu.Lock()
	r.state[uid] = rec
	r.mu.Unlock()
}

// hostIPs are the node's addresses as the pod's status has them, for the
// probe exemption (the gateways of the pod's routes are added at Enroll).
func hostIPs(pod *corev1.Pod, podIPs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		ip, err := netip.ParseAddr(s)
		if ip = ip.Unmap(); err == nil && !slices.Contains(out, ip) && !slices.Contains(podIPs, ip) {
			out = append(out, ip)
		}
	}
	for _, h := range pod.Status.HostIPs {
		add(h.IP)
	}
	add(pod.Status.HostIP)
	return out
}

// unenrollKey unenrolls the pods recorded under key, but keepUID, one at a
// time under each one's lock.
func (r *Reconciler) unenrollKey(ctx context.Context, key, keepUID, reason string) error {
	var errs []error
	for _, uid := range r.uidsOf(key, keepUID) {
		errs = append(errs, r.unenrollIfKey(ctx, uid, key, reason))
	}
	return errors.Join(errs...)
}

// unenrollIfKey takes the pod's lock and unenrolls it if it is still
// recorded under key.
func (r *Reconciler) unenrollIfKey(ctx context.Context, uid, key, reason string) error {
	unlock := r.lockPod(uid)
	defer unlock()
	if rec, ok, _ := r.record(uid); !ok || rec.key != key {
		return nil // changed while we waited
	}
	return r.unenrollPod(ctx, uid, reason)
}

// unenrollPod takes the pod out of the dataplane and the tunnel. The caller
// holds the pod's lock.
func (r *Reconciler) unenrollPod(ctx context.Context, uid, reason string) error {
	rec, ok, _ := r.record(uid)
	if !ok {
		return nil
	}
	if err := r.cfg.Dataplane.Unenroll(ctx, uid); err != nil {
		return err
	}
	if r.cfg.Tunnel != nil {
		if err := r.cfg.Tunnel.DeletePod(ctx, uid); err != nil {
			return fmt.Errorf("pod %s: tell the tunnel: %w", uid, err)
		}
	}
	r.mu.Lock()
	delete(r.state, uid)
	delete(r.cniNetns, uid)
	r.mu.Unlock()
	r.log.Info("pod unenrolled", "pod", rec.key, "uid", uid, "reason", reason)
	return nil
}
