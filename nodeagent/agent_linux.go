package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warrenmesh/warren/internal/reuseport"
	"github.com/warrenmesh/warren/internal/zds"
	"github.com/warrenmesh/warren/nodeagent/cni"
	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// DefaultMetricsAddr is where the agent serves /metrics and /healthz.
const DefaultMetricsAddr = ":15024"

// AgentConfig is everything warren-agent runs with.
type AgentConfig struct {
	// Node is this node's name (the pod's spec.nodeName, from the downward API).
	Node string
	// Kubeconfig is a kubeconfig path; in-cluster configuration if empty.
	Kubeconfig string
	// Kernel configures the eBPF dataplane; its Node, Logger and Registerer are set by Run.
	Kernel Options
	// ZtunnelSocket is where the ztunnel fetches pods and their netns (zds.DefaultPath if empty).
	ZtunnelSocket string
	// CNISocket is where the warren-cni plugin calls (cniapi.DefaultSocket if empty).
	CNISocket string
	// InstallCNI chains the plugin into the node's CNI configuration (CNI).
	InstallCNI bool
	CNI        cni.Config
	// MetricsAddr serves /metrics and /healthz (DefaultMetricsAddr if empty;
	// "-" for none). Bound with SO_REUSEPORT: during a rolling update the
	// next agent binds it too.
	MetricsAddr string
	// PodName and PodNamespace are the agent's own pod (downward API). At
	// exit, the agent uninstalls when the pod's DaemonSet or its namespace is
	// deleted (Warren removed), and leaves everything in place otherwise
	// (restart, upgrade), and always when PodName is empty.
	PodName, PodNamespace string
	// Netns finds running pods' network namespaces; ProcNetnsFinder if nil.
	Netns NetnsFinder
	// ShutdownTimeout bounds the API calls of that decision; 5 s if zero.
	ShutdownTimeout time.Duration
	// FlowAddr serves the flow stream, gRPC (DefaultFlowAddr if empty; "-" for none).
	FlowAddr string
}

func (c *AgentConfig) setDefaults() {
	if c.ZtunnelSocket == "" {
		c.ZtunnelSocket = zds.DefaultPath
	}
	if c.CNISocket == "" {
		c.CNISocket = cniapi.DefaultSocket
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = DefaultMetricsAddr
	}
	if c.Netns == nil {
		c.Netns = ProcNetnsFinder{}
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	c.Kernel.Node = c.Node
	c.Kernel.setDefaults()
	if c.CNI.Socket == "" {
		c.CNI.Socket = c.CNISocket
	}
	c.CNI.SetDefaults()
}

// Validate checks the configuration after defaults are applied.
func (c *AgentConfig) Validate() error {
	c.setDefaults()
	if c.Node == "" {
		return errors.New("config: node name missing (set it from spec.nodeName)")
	}
	if err := c.Kernel.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.InstallCNI && c.CNI.Binary == "" {
		return errors.New("config: installing the CNI plugin needs the path of its binary")
	}
	if c.MetricsAddr != "-" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("config: metrics address %q: %w", c.MetricsAddr, err)
		}
	}
	return nil
}

// RunAgent runs the node agent until ctx ends: the eBPF dataplane, the
// reconciler, the ztunnel's zds server, the CNI server (and plugin install)
// and the metrics endpoint. A second agent started meanwhile (a DaemonSet's
// surge) takes the sockets over and adopts the pins; this one keeps its
// connected ztunnel until it stops. On the way out it leaves redirection and
// the CNI plugin in place for the next agent (pods fail closed meanwhile),
// unless Warren is being removed (see AgentConfig.PodName): then it
// uninstalls, as UninstallAgent does.
func RunAgent(ctx context.Context, cfg AgentConfig, log *slog.Logger) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes config: %w", err)
	}
	rc.UserAgent = "warren-agent/" + cfg.Node
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	removal := newRemovalCheck(ctx, client, cfg.PodNamespace, cfg.PodName, cfg.ShutdownTimeout, log.With("component", "shutdown"))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Kernel.Logger, cfg.Kernel.Registerer = log, reg
	kernel, err := Open(ctx, cfg.Kernel)
	if err != nil {
		return err
	}
	defer kernel.Close()
	defer func() {
		// After every server below has stopped: the last thing the agent does.
		dctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		uninstall, why := removal.decide(dctx)
		if !uninstall {
			log.Info("agent stopping, redirection and the CNI plugin stay in place for the next agent", "why", why)
			return
		}
		log.Info("Warren is being removed: uninstalling from this node", "why", why)
		err = errors.Join(err, kernel.Uninstall(dctx), UninstallAgent(cfg, log))
	}()
	// Kernel flow records (flows_agent_linux.go): after Open, whose maps they share.
	flows, err := openAgentFlows(cfg, client, reg, log)
	if err != nil {
		return err
	}
	defer flows.Close()

	ztunnel, err := zds.Listen(cfg.ZtunnelSocket, zds.ServerOptions{Logger: log.With("component", "zds")})
	if err != nil {
		return err
	}
	defer ztunnel.Close()
	rec, err := NewReconciler(ReconcilerConfig{
		Node: cfg.Node, Client: client, Dataplane: kernel, Tunnel: ZDSTunnel{ztunnel},
		Netns: cfg.Netns, Logger: log.With("component", "reconciler"),
	})
	if err != nil {
		return err
	}
	cniSrv, err := cni.Listen(cfg.CNISocket, rec, log.With("component", "cni"))
	if err != nil {
		return err
	}
	defer cniSrv.Close()

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rec.Run(ctx) })
	g.Go(func() error { return ztunnel.Serve(ctx) })
	g.Go(func() error { return cniSrv.Serve(ctx) })
	g.Go(func() error { return flows.Run(ctx) })
	if cfg.MetricsAddr != "-" {
		g.Go(func() error { return serveMetrics(ctx, cfg.MetricsAddr, reg, log.With("component", "metrics")) })
	}
	if cfg.InstallCNI {
		g.Go(func() error { keepCNIInstalled(ctx, cfg.CNI, log.With("component", "cni-install")); return nil })
	}
	log.Info("agent running", "node", cfg.Node, "ztunnel_socket", cfg.ZtunnelSocket, "cni_socket", cfg.CNISocket, "metrics", cfg.MetricsAddr)
	return g.Wait()
}

// keepCNIInstalled installs the plugin and checks again every 30 s: the
// primary CNI may write its configuration late, or rewrite it.
func keepCNIInstalled(ctx context.Context, cfg cni.Config, log *slog.Logger) {
	last := ""
	for {
		path, err := cni.Install(cfg)
		switch {
		case err == nil && path != last:
			log.Info("cni plugin chained", "conf", path)
			last = path
		case errors.Is(err, cni.ErrNoConfig):
			log.Info("waiting for the node's CNI configuration", "dir", cfg.ConfDir)
		case err != nil:
			log.Error("cni plugin install failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(30 * time.Second):
		}
	}
}

func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := listenReusePort(ctx, addr, "metrics", log)
	if err != nil || ln == nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// listenReusePort listens on a TCP port of the node with SO_REUSEPORT:
// during a rolling update two agents of the node (host network) serve the
// port at once. A port held without it (an older agent, during its upgrade)
// is tried again until it is free, rather than failing the agent; nil, nil
// when ctx ends first.
func listenReusePort(ctx context.Context, addr, what string, log *slog.Logger) (net.Listener, error) {
	ln, err := reuseport.Wait(ctx, addr, 2*time.Second, func() { log.Warn(what+" port in use, trying again", "addr", addr) })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ln, nil
}

// UninstallAgent removes what agents of this node left: every pinned link
// (which detaches the programs) and map, the CNI plugin's entries and binary,
// and the agent's sockets. It loads nothing, so it also works after an
// upgrade that cannot adopt the pins.
func UninstallAgent(cfg AgentConfig, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	errs := []error{RemovePins(cfg.Kernel), cni.Uninstall(cfg.CNI)}
	for _, s := range []string{cfg.ZtunnelSocket, cfg.CNISocket} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	log.Info("agent uninstalled", "node", cfg.Node, "pin_dir", cfg.Kernel.PinDir)
	return nil
}
