// Command ztunnel is Warren's per-node tunnel. Today it runs from a static
// configuration file (--config; see ztunnel.Config); every flag can also be
// set as an environment variable ZTUNNEL_<FLAG> with dashes as underscores.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/flagenv"
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
	fs := pflag.NewFlagSet("ztunnel", pflag.ContinueOnError)
	fs.String("config", "", "static configuration file (YAML or JSON)")
	fs.String("admin-addr", "", "admin listen address (config dump, certificates, pprof); overrides the file, default 127.0.0.1:15000")
	fs.String("metrics-addr", "", "Prometheus listen address; overrides the file, default :15020")
	fs.String("ready-addr", "", "readiness listen address; overrides the file, default :15021")
	fs.String("pin-dir", "", "the node agent's bpffs pin directory; overrides the file")
	fs.Int("max-procs", 0, "Go scheduler threads (GOMAXPROCS); 0 keeps Go's default, one per CPU")
	v, log, err := flagenv.Parse(fs, os.Args[1:], "ZTUNNEL")
	if err != nil {
		return err
	}

	// On a small node one scheduler thread spends less on wake-ups and
	// hand-offs between threads than it loses in parallelism (make bench).
	if n := v.GetInt("max-procs"); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	if v.GetString("config") == "" {
		return fmt.Errorf("--config is required (static mode is the only mode so far)")
	}
	cfg, err := ztunnel.LoadStatic(v.GetString("config"))
	if err != nil {
		return err
	}
	for _, o := range []struct {
		flag, def string
		dst       *string
	}{
		{"admin-addr", "127.0.0.1:15000", &cfg.AdminAddr},
		{"metrics-addr", ":15020", &cfg.MetricsAddr},
		{"ready-addr", ":15021", &cfg.ReadyAddr},
		{"pin-dir", "", &cfg.PinDir},
	} {
		if s := v.GetString(o.flag); s != "" {
			*o.dst = s
		} else if *o.dst == "" {
			*o.dst = o.def
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	t, err := ztunnel.New(cfg, ztunnel.Options{Logger: log, Registry: reg})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return t.Run(ctx)
}
