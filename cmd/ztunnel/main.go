// Command ztunnel is Warren's per-node tunnel. Its local pods come from the
// node agent over zds (--zds-socket; see package zds), or, when the
// configuration file lists pods (tests and benchmarks), from the file alone.
// Workloads, services and policies come from the controller's stream and
// certificates from its CA (--controller-addr), or from a static
// configuration file (--config; see ztunnel.Config); with both, the file
// gives the node's settings and the controller the mesh. Every flag can also
// be set as an environment variable ZTUNNEL_<FLAG> with dashes as
// underscores.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/flagenv"
	"github.com/warrenmesh/warren/internal/zds"
	"github.com/warrenmesh/warren/ztunnel"
)

// The ztunnel switches network namespaces on other threads: the main thread
// must stay in the node's netns (see ztunnel's nsThread).
func init() { runtime.LockOSThread() }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runArgs(ctx, os.Args[1:])
}

// runArgs runs the ztunnel with these arguments until ctx ends.
func runArgs(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("ztunnel", pflag.ContinueOnError)
	fs.String("config", "", "static configuration file (YAML or JSON)")
	fs.String("admin-addr", "", "admin listen address (config dump, certificates, pprof); overrides the file, default 127.0.0.1:15000")
	fs.String("metrics-addr", "", "Prometheus listen address; overrides the file, default :15020")
	fs.String("ready-addr", "", "readiness listen address; overrides the file, default :15021")
	fs.String("pin-dir", "", "the node agent's bpffs pin directory; overrides the file")
	fs.String("zds-socket", zds.DefaultPath, "the node agent's zds socket, where local pods and their netns come from unless the configuration lists pods")
	fs.String("controller-addr", "", "the controller's gRPC address (host:port): mesh configuration and certificates")
	fs.String("controller-name", "", "name in the controller's serving certificate; the host of --controller-addr if empty")
	fs.String("token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token", "service account token sent to the controller")
	fs.String("ca-bundle", "", "PEM file of the mesh roots (ConfigMap warren-ca-root-cert); overrides the file")
	fs.String("node-name", "", "this node's name; overrides the file")
	fs.String("trust-domain", "", "SPIFFE trust domain; overrides the file, default cluster.local")
	fs.String("non-mesh", "", "outbound to destinations outside the mesh: passthrough or refuse; overrides the file")
	fs.Duration("drain-grace", 5*time.Second, "on SIGTERM, or when a new ztunnel took over the pods, how long the pods' open connections may take to finish before they are cut (the new ztunnel gets the new ones at once); --handover-wait plus --drain-grace must stay below the pod's terminationGracePeriodSeconds")
	fs.Duration("handover-wait", 10*time.Second, "on SIGTERM, how long to keep serving the pods (node agent mode) until a new ztunnel takes them over, before draining; the old one no longer reconnects to the agent meanwhile")
	fs.Int("max-procs", 0, "Go scheduler threads (GOMAXPROCS); 0 keeps Go's default, one per CPU")
	v, log, err := flagenv.Parse(fs, args, "ZTUNNEL")
	if err != nil {
		return err
	}

	// On a small node one scheduler thread spends less on wake-ups and
	// hand-offs between threads than it loses in parallelism (make bench).
	if n := v.GetInt("max-procs"); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	controller := v.GetString("controller-addr")
	cfg := &ztunnel.Config{}
	switch {
	case v.GetString("config") != "":
		if cfg, err = ztunnel.LoadStatic(v.GetString("config")); err != nil {
			return err
		}
	case controller == "":
		return fmt.Errorf("--controller-addr or --config is required: the mesh configuration comes from one of them")
	}
	for _, o := range []struct {
		flag, def string
		dst       *string
	}{
		{"admin-addr", "127.0.0.1:15000", &cfg.AdminAddr},
		{"metrics-addr", ":15020", &cfg.MetricsAddr},
		{"ready-addr", ":15021", &cfg.ReadyAddr},
		{"node-name", "", &cfg.Node},
		{"ca-bundle", "", &cfg.CABundle},
		{"trust-domain", "", &cfg.TrustDomain},
		{"non-mesh", "", &cfg.NonMesh},
		{"pin-dir", "", &cfg.PinDir},
	} {
		if s := v.GetString(o.flag); s != "" {
			*o.dst = s
		} else if *o.dst == "" {
			*o.dst = o.def
		}
	}

	if cfg.PinDir == "" && cfg.Node != "" {
		cfg.PinDir = "/sys/fs/bpf/warren/" + cfg.Node // the node agent's default
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := ztunnel.Options{Logger: log, Registry: reg, DrainGrace: v.GetDuration("drain-grace")}
	if opts.DrainGrace < 0 {
		return fmt.Errorf("--drain-grace %v: must not be negative", opts.DrainGrace)
	}
	if len(cfg.Pods) == 0 {
		wait := v.GetDuration("handover-wait")
		if wait < 0 {
			return fmt.Errorf("--handover-wait %v: must not be negative", wait)
		}
		opts.Pods = ztunnel.ZDSPods{Path: v.GetString("zds-socket"), HandoverWait: wait, Logger: log.With("component", "zds")}
		log.Info("local pods from the node agent", "socket", v.GetString("zds-socket"))
	} else {
		log.Info("local pods from the configuration (static mode)", "pods", len(cfg.Pods))
	}
	var cp *ztunnel.ControlPlane
	if controller != "" {
		cp = &ztunnel.ControlPlane{Addr: controller, ServerName: v.GetString("controller-name"), TokenFile: v.GetString("token-file"),
			Node: cfg.Node, Log: log.With("component", "controlplane")}
		opts.Sign = cp.Sign
		defer cp.Close()
	}
	t, err := ztunnel.New(cfg, opts)
	if err != nil {
		return err
	}
	if cp == nil {
		return t.Run(ctx)
	}
	// No pod is served before the first configuration: without it every
	// destination would look outside the mesh and go out in plaintext.
	cp.TrustDomain, cp.Roots = t.TrustDomain(), t.Roots()
	first := make(chan struct{})
	var once sync.Once
	cpDone := make(chan error, 1)
	go func() {
		cpDone <- cp.Run(ctx, func(m ztunnel.Mesh) error {
			if err := t.SetMesh(m); err != nil {
				return err
			}
			once.Do(func() { close(first) })
			return nil
		})
	}()
	log.Info("waiting for the controller's configuration", "controller", controller)
	select {
	case <-first:
	case err := <-cpDone:
		return fmt.Errorf("controller: %w", err)
	case <-ctx.Done():
		return nil
	}
	log.Info("configuration received from the controller")
	return t.Run(ctx)
}
