// Command warren-controller is Warren's cluster controller: it builds the
// mesh model from Kubernetes, writes policy status (as leader), serves the
// model to ztunnels over gRPC and signs their workloads' certificates. Every
// flag can also be set as an environment variable WARREN_CONTROLLER_<FLAG>,
// dashes as underscores.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/warrenmesh/warren/controller"
	"github.com/warrenmesh/warren/controller/gateway"
	"github.com/warrenmesh/warren/internal/flagenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "warren-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := pflag.NewFlagSet("warren-controller", pflag.ContinueOnError)
	fs.String("kubeconfig", "", "kubeconfig file; default: in-cluster")
	fs.String("trust-domain", "cluster.local", "SPIFFE trust domain")
	fs.String("system-namespace", "warren-system", "namespace of the controller, its CA Secret and mesh-wide policies")
	fs.String("grpc-addr", controller.DefaultGRPCAddr, "distribution and certificate API (TLS)")
	fs.String("metrics-addr", controller.DefaultMetricsAddr, "Prometheus metrics; 0 disables")
	fs.String("health-addr", controller.DefaultHealthAddr, "health probes; 0 disables")
	fs.Bool("leader-elect", true, "elect a leader to write status (every replica serves)")
	fs.StringSlice("callers", nil, "namespace/serviceaccount allowed to subscribe and request certificates; default <system-namespace>/ztunnel")
	fs.String("ca-secret", "warren-ca", "CA Secret in the system namespace (created with a new root if missing)")
	fs.String("waypoint-image", "", "image of cmd/waypoint for Gateways of class warren-waypoint; empty: no waypoints")
	v, log, err := flagenv.Parse(fs, os.Args[1:], "WARREN_CONTROLLER")
	if err != nil {
		return err
	}
	klog.SetLogger(logr.FromSlogHandler(log.Handler()))
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))

	var rc *rest.Config
	if kc := v.GetString("kubeconfig"); kc != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kc)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("apiserver config: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return controller.Run(ctx, controller.RunConfig{
		Config: controller.Config{
			TrustDomain:     v.GetString("trust-domain"),
			SystemNamespace: v.GetString("system-namespace"),
			Log:             log,
		},
		Rest:           rc,
		GRPCAddr:       v.GetString("grpc-addr"),
		MetricsAddr:    v.GetString("metrics-addr"),
		HealthAddr:     v.GetString("health-addr"),
		LeaderElection: v.GetBool("leader-elect"),
		Callers:        v.GetStringSlice("callers"),
		CASecret:       v.GetString("ca-secret"),
		Waypoint:       gateway.Options{Image: v.GetString("waypoint-image")},
	})
}
