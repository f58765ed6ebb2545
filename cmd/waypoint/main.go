// Command waypoint is Warren's L7 proxy for the Services that name it as
// their waypoint (see package waypoint). It serves HBONE on :15008 with its
// own certificate, metrics on :15020, readiness on :15021 and admin on
// 127.0.0.1:15000. It runs in one of two modes:
//
//   - controller (--controller, as the controller runs it): with only its
//     ServiceAccount token (--token-file) and the mesh roots (--ca-bundle),
//     it has its own identity (spiffe://<td>/ns/<ns>/sa/<name> of
//     --gateway=<ns>/<name>) signed by the controller's CA, renewed at half
//     its life, and subscribes to its configuration (waypoint.ControlPlane);
//     it is ready once it holds a certificate and a first configuration.
//   - static (--config, --cert, --key, --ca-bundle, --name): the
//     configuration from a file (a WaypointConfig of api/proto/mesh/v1 in
//     YAML or JSON, see waypoint/model.LoadStatic) and the certificate from
//     files.
//
// Every flag can also be set as an environment variable WAYPOINT_<FLAG> with
// dashes as underscores.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/warrenmesh/warren/internal/controlplane"
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
	fs.String("name", "", "this waypoint, <namespace>/<name>: it serves the Services whose waypoint names it (static mode)")
	fs.String("gateway", "", "this waypoint's Gateway, <namespace>/<name> (controller mode; its ServiceAccount has the same name)")
	fs.String("controller", "", "the controller's gRPC address, host:port: controller mode")
	fs.String("controller-name", "", "name in the controller's serving certificate; the host of --controller if empty")
	fs.String("token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token", "the ServiceAccount token (controller mode)")
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
	if v.GetString("controller") != "" {
		return runController(ctx, v, log)
	}
	for _, f := range []string{"name", "config", "cert", "key", "ca-bundle"} {
		if v.GetString(f) == "" {
			return fmt.Errorf("--%s is required (or --controller)", f)
		}
	}
	cert, err := tls.LoadX509KeyPair(v.GetString("cert"), v.GetString("key"))
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	roots, _, err := loadBundle(v.GetString("ca-bundle"))
	if err != nil {
		return err
	}
	cfg, err := model.LoadStatic(v.GetString("config"))
	if err != nil {
		return err
	}
	wp, err := newWaypoint(v, v.GetString("name"), identity.NewCertSource(&cert), roots, log)
	if err != nil {
		return err
	}
	defer wp.Close()
	if err := wp.SetConfig(cfg); err != nil {
		return fmt.Errorf("configuration %s: %w", v.GetString("config"), err)
	}
	return serve(ctx, v, wp, log)
}

// runController runs the waypoint in controller mode.
func runController(ctx context.Context, v *viper.Viper, log *slog.Logger) error {
	for _, f := range []string{"gateway", "ca-bundle", "token-file"} {
		if v.GetString(f) == "" {
			return fmt.Errorf("--%s is required with --controller", f)
		}
	}
	roots, bundle, err := loadBundle(v.GetString("ca-bundle"))
	if err != nil {
		return err
	}
	client := &controlplane.Client{Addr: v.GetString("controller"), ServerName: v.GetString("controller-name"),
		TokenFile: v.GetString("token-file"), Roots: roots, Log: log}
	defer client.Close()
	cp := &waypoint.ControlPlane{Client: client, Self: v.GetString("gateway"), TrustDomain: v.GetString("trust-domain"),
		Bundle: bundle, Roots: roots, Log: log}
	if _, err := cp.Identity(); err != nil {
		return err
	}
	log.Info("requesting a certificate", "controller", client.Addr, "waypoint", cp.Self)
	certs, err := cp.Certificate(ctx)
	if err != nil {
		return nil // ctx ended first
	}
	wp, err := newWaypoint(v, cp.Self, certs, roots, log)
	if err != nil {
		return err
	}
	defer wp.Close()
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go cp.Renew(runCtx, certs)
	go func() { _ = cp.Run(runCtx, wp.SetConfig) }()
	return serve(ctx, v, wp, log)
}

// loadBundle reads the mesh roots.
func loadBundle(path string) (*identity.Roots, []byte, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("ca bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("ca bundle %s: no certificate", path)
	}
	return identity.NewRoots(roots), pem, nil
}

func newWaypoint(v *viper.Viper, self string, certs *identity.CertSource, roots *identity.Roots, log *slog.Logger) (*waypoint.Waypoint, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return waypoint.New(waypoint.Options{
		Self:        self,
		Certs:       certs,
		Roots:       roots,
		TrustDomain: v.GetString("trust-domain"),
		Logger:      log,
		Registry:    reg,
	})
}

// serve serves wp until ctx ends, then drains.
func serve(ctx context.Context, v *viper.Viper, wp *waypoint.Waypoint, log *slog.Logger) error {
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
	log.Info("waypoint serving", "identity", wp.Identity(), "hbone", ln.Addr().String())
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
