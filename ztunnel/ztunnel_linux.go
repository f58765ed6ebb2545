package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/zds"
)

// Pod ports of the tunnel, as the pods' connections see them. No tunnel
// listens on them, so that two generations can serve a pod during a
// handover: each generation listens on ports of its own (127.0.0.1:0 and [::1]:0 for outbound, :0 for
// inbound and HBONE) and tells the kernel (kernelMaps.setListeners), which
// steers connections to the pod's 15006 and 15008 by socket, and its
// redirected outbound connections to the current generation's port (15001
// when there is none: refused, fail closed).
const (
	OutboundPort = redirect.PortOutbound
	InboundPort  = redirect.PortInbound
)

// Options are the Tunnel's injected parts.
type Options struct {
	Logger *slog.Logger
	// Registry receives the metrics and serves them on MetricsAddr; a fresh
	// one if nil.
	Registry *prometheus.Registry
	// Pods is where the local pods come from; StaticPods(cfg.Pods) if nil.
	Pods PodSource
	// Sign, if set, gets a certificate for a local identity the
	// configuration has none for (the controller's CA, see ControlPlane);
	// the tunnel renews it at half its lifetime.
	Sign SignFunc
	// DrainGrace is how long the pods' listeners and connections are kept
	// once Run's context ends or another ztunnel took over the pods (see
	// podProxy.drain): 0 closes them at once.
	DrainGrace time.Duration
}

// Tunnel is a running ztunnel.
type Tunnel struct {
	cfg     *Config
	st      atomic.Pointer[State] // swapped whole by SetMesh
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	pods    PodSource

	roots    *identity.Roots
	sign     SignFunc
	runCtx   context.Context // Run's, for certificate renewals
	certsMu  sync.Mutex
	certs    map[identity.ID]*certEntry
	loadCert func(identity.ID) (*identity.CertSource, error) // from the configuration's files
	fromCA   func(identity.ID) bool                          // whether sign gets id's certificate
	kernel   *kernelMaps
	grace    time.Duration
	drains   sync.WaitGroup // pods replaced while Run serves

	conns connRegistry // open inbound connections, for SetMesh to check again

	ready   atomic.Bool
	mu      sync.Mutex
	active  map[string]*podProxy // by UID
	stopped bool                 // Run is draining: no pod is added any more
}

// New checks the configuration and loads certificates; Run starts serving.
func New(cfg *Config, o Options) (*Tunnel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Pods == nil {
		o.Pods = StaticPods(cfg.Pods)
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	pool, err := loadRoots(cfg)
	if err != nil {
		return nil, err
	}
	certs, loadCert, err := loadCerts(cfg)
	if err != nil {
		return nil, err
	}
	t := &Tunnel{
		cfg: cfg, log: o.Logger.With("node", cfg.Node), reg: o.Registry, metrics: m, pods: o.Pods,
		roots: identity.NewRoots(pool), certs: map[identity.ID]*certEntry{}, loadCert: loadCert, active: map[string]*podProxy{},
		sign: o.Sign, runCtx: context.Background(), grace: o.DrainGrace,
		fromCA: func(identity.ID) bool { return false },
	}
	for id, src := range certs {
		t.certs[id] = readyCert(src)
	}
	t.st.Store(NewState(cfg))
	if o.Sign != nil {
		t.fromCA = func(id identity.ID) bool {
			_, ok := cfg.Certs[certKey(id)]
			return !ok
		}
	}
	return t, nil
}

// state is the mesh view in force.
func (t *Tunnel) state() *State { return t.st.Load() }

// Run serves until ctx ends, then drains (Options.DrainGrace) and closes
// every listener and connection. When the node agent says another ztunnel
// took over the pods (a rollout's new pod), it drains the same way, then
// waits, serving nothing, until ctx ends: were it to exit, it would be
// restarted and take the pods back.
func (t *Tunnel) Run(ctx context.Context) error {
	var err error
	if t.kernel, err = openKernelMaps(t.cfg.PinDir); err != nil {
		return fmt.Errorf("node agent pins %s: %w", t.cfg.PinDir, err)
	}
	defer t.kernel.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.runCtx = ctx
	servers, err := t.serveAdmin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	err = t.pods.Run(ctx, t)
	t.ready.Store(false)
	superseded := errors.Is(err, zds.ErrSuperseded)
	if superseded {
		t.log.Info("another ztunnel took over the pods, draining", "grace", t.grace)
		err = nil
	} else if t.grace > 0 {
		t.log.Info("stopping, draining", "grace", t.grace)
	}
	t.mu.Lock()
	pods := t.active
	t.active = map[string]*podProxy{}
	t.stopped = true
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() { p.drain(t.grace) })
	}
	wg.Wait()
	t.drains.Wait()
	if superseded {
		t.log.Info("drained; waiting to be stopped")
		<-ctx.Done()
	}
	t.log.Info("ztunnel stopped")
	return err
}

// Synced implements PodHandler: the tunnel is ready once the first set of
// pods is served.
func (t *Tunnel) Synced() {
	t.ready.Store(true)
	t.mu.Lock()
	n := len(t.active)
	t.mu.Unlock()
	t.log.Info("ztunnel ready", "pods", n)
}

// AddPod implements PodHandler: it opens the pod's listeners in its netns and
// registers them with the kernel. It waits for nothing remote: a certificate
// the CA has yet to issue comes in the background (see certEntry), so the
// node agent's ack (zds, 5 s per message) never waits on the CA (up to
// signTimeout per request). The tunnel's lock covers the map of pods only.
func (t *Tunnel) AddPod(ctx context.Context, pod LocalPod) error {
	p, err := t.startPod(ctx, pod)
	t.mu.Lock()
	old := t.active[pod.UID]
	delete(t.active, pod.UID)
	stopped := t.stopped
	if err == nil && !stopped {
		t.active[pod.UID] = p
	}
	t.mu.Unlock()
	if old != nil {
		// The new proxy has taken the pod's listeners over (or failed to:
		// then the pod fails closed): the old one drains as a whole
		// tunnel would, so a replay of the pods (the agent restarted)
		// drops no connection.
		t.drains.Go(func() { old.drain(t.grace) })
	}
	if err == nil && stopped {
		p.close()
		err = errors.New("ztunnel stopping")
	}
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// RemovePod implements PodHandler.
func (t *Tunnel) RemovePod(_ context.Context, uid string) error {
	t.mu.Lock()
	p := t.active[uid]
	delete(t.active, uid)
	t.mu.Unlock()
	if p != nil {
		p.close()
	}
	return nil
}

// cert returns the certificate of a local identity. A configured one is
// loaded now (a local file: an error refuses the pod); one from the CA is
// requested in the background the first time (fetchCert) and handshakes wait
// for it (certEntry). The lock covers the map only.
func (t *Tunnel) cert(id identity.ID) (*certEntry, error) {
	t.certsMu.Lock()
	e := t.certs[id]
	t.certsMu.Unlock()
	if e != nil {
		return e, nil
	}
	fromCA := t.fromCA(id)
	if fromCA {
		e = &certEntry{src: identity.NewCertSource(nil), ready: make(chan struct{})}
	} else {
		src, err := t.loadCert(id)
		if err != nil {
			return nil, err
		}
		e = readyCert(src)
	}
	t.certsMu.Lock()
	if prev := t.certs[id]; prev != nil {
		t.certsMu.Unlock()
		return prev, nil
	}
	t.certs[id] = e
	t.certsMu.Unlock()
	if fromCA {
		go t.fetchCert(id, e)
	}
	return e, nil
}

// SetMesh replaces the mesh view (workloads, services, policies, local
// pods' modes) the tunnel routes and authorizes with, as one atomic swap:
// a connection sees either the old view or the new one. Open inbound
// connections the new view denies (a new DENY, an ALLOW that no longer
// matches, STRICT for plaintext) are closed. An invalid view is refused
// whole and the old one stays in force.
func (t *Tunnel) SetMesh(m Mesh) error {
	c := *t.state().cfg
	c.Pods = slices.Clone(c.Pods)
	c.Workloads, c.Services, c.Policies = m.Workloads, m.Services, m.Policies
	if err := c.Validate(); err != nil {
		t.metrics.meshUpdates.WithLabelValues("nacked").Inc()
		return err
	}
	st := NewState(&c)
	st.modes = m.Modes
	t.st.Store(st)
	t.metrics.meshUpdates.WithLabelValues("acked").Inc()
	if n := t.revokeDenied(st); n > 0 {
		t.log.Info("mesh update closed connections it no longer allows", "connections", n)
	}
	return nil
}

// TrustDomain is the mesh's trust domain (after defaults).
func (t *Tunnel) TrustDomain() string { return t.cfg.TrustDomain }

// Roots are the mesh roots the tunnel verifies peers with; the CA's answers
// update them.
func (t *Tunnel) Roots() *identity.Roots { return t.roots }
