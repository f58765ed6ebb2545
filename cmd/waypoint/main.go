// Command waypoint is Warren's L7 proxy for the Services that name it as
// their waypoint (see package waypoint). It serves HBONE on :15008 with its
// own certificate, metrics on :15020, readiness on :15021 and admin on
// 127.0.0.1:15000. For now its configuration comes from a static file
// (--config: a WaypointConfig of api/proto/mesh/v1 in YAML or JSON, see
// waypoint/model.LoadStatic) and its certificate from files; the
// controller's stream comes later. Every flag can also be set as an
// environment variable WAYPOINT_<FLAG> with dashes as underscores.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/flagenv"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/waypoint"
	"github.com/warrenmesh/warren/waypoint/model"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runArgs(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(1)
	}
}

// listening, if set (tests), is told the listeners' addresses.
var listening func(hbone net.Addr, side waypoint.Addrs)

// runArgs runs the waypoint with these arguments until ctx ends.
func runArgs(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("waypoint", pflag.ContinueOnError)
	fs.String("name", "", "this waypoint, <namespace>/<name>: it serves the Services whose waypoint names it")
	fs.String("config", "", "static configuration file (WaypointConfig, YAML or JSON)")
	fs.String("cert", "", "PEM certificate chain of the waypoint's SVID")
	fs.String("key", "", "PEM private key of the waypoint's SVID")
	fs.String("ca-bundle", "", "PEM file of the mesh roots")
	fs.String("trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of the callers accepted")
	fs.String("hbone-addr", ":15008", "HBONE listen address")
	fs.String("admin-addr", "127.0.0.1:15000", "admin listen address (config dump, pprof); empty: none")
	fs.String("metrics-addr", ":15020", "Prometheus listen address; empty: none")
	fs.String("ready-addr", ":15021", "readiness listen address; empty: none")
	fs.Duration("drain-grace", 5*time.Second, "on SIGTERM, how long open tunnels may take to finish")
	v, log, err := flagenv.Parse(fs, args, "WAYPOINT")
	if err != nil {
		return err
	}
	for _, f := range []string{"name", "config", "cert", "key", "ca-bundle"} {
		if v.GetString(f) == "" {
			return fmt.Errorf("--%s is required", f)
		}
	}
	cert, err := tls.LoadX509KeyPair(v.GetString("cert"), v.GetString("key"))
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	pem, err := os.ReadFile(v.GetString("ca-bundle"))
	if err != nil {
		return fmt.Errorf("ca bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("ca bundle %s: no certificate", v.GetString("ca-bundle"))
	}
	cfg, err := model.LoadStatic(v.GetString("config"))
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	wp, err := waypoint.New(waypoint.Options{
		Self:        v.GetString("name"),
		Certs:       identity.NewCertSource(&cert),
		Roots:       identity.NewRoots(roots),
		TrustDomain: v.GetString("trust-domain"),
		Logger:      log,
		Registry:    reg,
	})
	if err != nil {
		return err
	}
	defer wp.Close()
	if err := wp.SetConfig(cfg); err != nil {
		return fmt.Errorf("configuration %s: %w", v.GetString("config"), err)
	}
	sideCtx, stopSide := context.WithCancel(context.Background())
	defer stopSide()
	side, err := wp.ServeSide(sideCtx, waypoint.Addrs{Admin: v.GetString("admin-addr"), Metrics: v.GetString("metrics-addr"), Ready: v.GetString("ready-addr")})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", v.GetString("hbone-addr"))
	if err != nil {
		return err
	}
	log.Info("waypoint serving", "name", v.GetString("name"), "identity", wp.Identity(), "hbone", ln.Addr().String())
	if listening != nil {
		listening(ln.Addr(), side)
	}
	served := make(chan error, 1)
	go func() { served <- wp.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("draining", "grace", v.GetDuration("drain-grace"))
	dctx, cancel := context.WithTimeout(context.Background(), v.GetDuration("drain-grace"))
	defer cancel()
	if err := wp.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return <-served
}
