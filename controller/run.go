package controller

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/distribution"
	"github.com/warrenmesh/warren/controller/gateway"
)

var managedBy = labels.SelectorFromSet(labels.Set{gateway.LabelManagedBy: gateway.ManagedBy})

// Default addresses of the controller.
const (
	DefaultGRPCAddr    = ":15012" // distribution and certificate signing (TLS)
	DefaultMetricsAddr = ":15014"
	DefaultHealthAddr  = ":15016"
)

// MaxRequestBytes bounds a message to the controller: requests are a Hello,
// acks and CSRs, a few KiB at most; a larger one is refused with
// ResourceExhausted before it costs memory.
const MaxRequestBytes = 64 << 10

// RunConfig is everything warren-controller needs.
type RunConfig struct {
	Config
	Rest *rest.Config
	// GRPCAddr is where the distribution API listens, unless GRPCListener
	// is set (tests).
	GRPCAddr     string
	GRPCListener net.Listener
	// MetricsAddr and HealthAddr: "0" disables.
	MetricsAddr string
	HealthAddr  string
	// LeaderElection: only the leader writes status; every replica serves.
	LeaderElection bool
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election; zero:
	// controller-runtime's defaults (15 s, 10 s, 2 s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Elected, if set, is called when this replica becomes the leader (at
	// once without LeaderElection).
	Elected func()
	// Callers are the "namespace/serviceaccount" names that may subscribe
	// and request certificates; default the system namespace's ztunnel.
	Callers []string
	// CASecret is the CA Secret in the system namespace.
	CASecret string
	// ServingDNSNames name the controller in its serving certificate.
	ServingDNSNames []string
	// Registry defaults to controller-runtime's, which the metrics server
	// serves.
	Registry prometheus.Registerer
	// Ready, if set, is called once the gRPC server listens.
	Ready func(addr net.Addr)
	// Waypoint configures the waypoints run for Gateways of class
	// warren-waypoint; without an image, or without the Gateway API CRDs in
	// the cluster, no waypoint is run (and the log says so).
	Waypoint gateway.Options
}

// Validate checks the configuration and fills defaults.
func (c *RunConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.Rest == nil {
		return errors.New("controller: no apiserver configuration")
	}
	c.GRPCAddr = cmp.Or(c.GRPCAddr, DefaultGRPCAddr)
	c.MetricsAddr = cmp.Or(c.MetricsAddr, DefaultMetricsAddr)
	c.HealthAddr = cmp.Or(c.HealthAddr, DefaultHealthAddr)
	c.CASecret = cmp.Or(c.CASecret, ca.DefaultSecretName)
	if len(c.Callers) == 0 {
		c.Callers = []string{c.SystemNamespace + "/ztunnel"}
	}
	if len(c.ServingDNSNames) == 0 {
		c.ServingDNSNames = []string{"warren-controller." + c.SystemNamespace + ".svc"}
	}
	if c.Registry == nil {
		c.Registry = ctrlmetrics.Registry
	}
	if c.Waypoint.Controller == "" {
		c.Waypoint.Controller = c.ServingDNSNames[0] + DefaultGRPCAddr
	}
	c.Waypoint.TrustDomain = cmp.Or(c.Waypoint.TrustDomain, c.TrustDomain)
	return nil
}

// Run runs the controller until ctx ends: the model sync, the status
// writer (leader only), the CA and the gRPC distribution API.
func Run(ctx context.Context, rc RunConfig) error {
	if err := rc.Validate(); err != nil {
		return err
	}
	log := rc.Log
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), v1alpha1.AddToScheme(scheme), gwv1.Install(scheme)); err != nil {
		return fmt.Errorf("scheme: %w", err)
	}
	orDefault := func(d time.Duration) *time.Duration {
		if d == 0 {
			return nil
		}
		return &d
	}
	mgr, err := ctrl.NewManager(rc.Rest, ctrl.Options{
		Scheme:                  scheme,
		Logger:                  logr.FromSlogHandler(log.Handler()),
		Metrics:                 metricsserver.Options{BindAddress: rc.MetricsAddr},
		HealthProbeBindAddress:  rc.HealthAddr,
		LeaderElection:          rc.LeaderElection,
		LeaderElectionID:        "warren-controller",
		LeaderElectionNamespace: rc.SystemNamespace,
		// Let a successor take over at once when this replica stops.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 orDefault(rc.LeaseDuration),
		RenewDeadline:                 orDefault(rc.RenewDeadline),
		RetryPeriod:                   orDefault(rc.RetryPeriod),
		// What the waypoint controller writes is all the cache needs of
		// these kinds: not every Deployment, ServiceAccount and ConfigMap
		// of the cluster.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:     {Label: managedBy},
			&corev1.ServiceAccount{}: {Label: managedBy},
			&corev1.ConfigMap{}:      {Label: managedBy},
		}},
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	c, err := New(mgr, rc.Config)
	if err != nil {
		return err
	}
	// Ready once a model is published: before that the CA denies everything
	// and subscribers wait.
	if err := errors.Join(mgr.AddHealthzCheck("ping", healthz.Ping), mgr.AddReadyzCheck("model", func(*http.Request) error {
		select {
		case <-c.Published():
			return nil
		default:
			return errors.New("no model yet")
		}
	})); err != nil {
		return fmt.Errorf("health checks: %w", err)
	}
	if err := mgr.Add(c); err != nil {
		return fmt.Errorf("add controller: %w", err)
	}
	if err := setupWaypoints(rc, mgr, log); err != nil {
		return err
	}

	cs, err := kubernetes.NewForConfig(rc.Rest)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	authority, err := ca.LoadOrCreate(ctx, cs.CoreV1().Secrets(rc.SystemNamespace), rc.CASecret, ca.Options{TrustDomain: rc.TrustDomain}, log)
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	if err := ca.PublishRoots(ctx, cs.CoreV1().ConfigMaps(rc.SystemNamespace), authority); err != nil {
		return err
	}
	caMetrics, err := ca.NewMetrics(rc.Registry)
	if err != nil {
		return fmt.Errorf("CA metrics: %w", err)
	}
	authn := &ca.TokenReviewer{Reviews: cs.AuthenticationV1().TokenReviews()}
	// Waypoints are Gateways: without their CRDs, there are none.
	var waypoints ca.Waypoints
	if err := gatewayAPIInstalled(mgr); err == nil {
		waypoints = gateway.Waypoints{Reader: mgr.GetClient()}
	}
	signer := &ca.Signer{CA: authority, Authn: authn, Authz: ca.ModelAuthorizer{Model: c.Model},
		Callers: rc.Callers, Waypoints: waypoints, Log: log.With("part", "ca"), Metrics: caMetrics}
	if err := signer.Validate(); err != nil {
		return err
	}
	distMetrics, err := distribution.NewMetrics(rc.Registry)
	if err != nil {
		return fmt.Errorf("distribution metrics: %w", err)
	}
	srv, err := distribution.New(distribution.Options{Log: log.With("part", "distribution"), Authn: authn,
		Callers: rc.Callers, Waypoints: waypoints, Signer: signer, Metrics: distMetrics})
	if err != nil {
		return err
	}
	c.OnModel(srv.Publish)

	lis := rc.GRPCListener
	if lis == nil {
		if lis, err = net.Listen("tcp", rc.GRPCAddr); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: authority.ServingCertificate(rc.ServingDNSNames),
	})), grpc.MaxRecvMsgSize(MaxRequestBytes))
	meshv1.RegisterDistributionServer(gs, srv)
	if err := mgr.Add(grpcRunnable{gs: gs, lis: lis, ready: rc.Ready}); err != nil {
		return fmt.Errorf("add gRPC server: %w", err)
	}
	go func() {
		select {
		case <-mgr.Elected():
			if rc.LeaderElection {
				log.Info("elected leader: this replica writes status")
			}
			if rc.Elected != nil {
				rc.Elected()
			}
		case <-ctx.Done():
		}
	}()
	log.Info("starting", "grpc", lis.Addr().String(), "leader_election", rc.LeaderElection, "trust_domain", rc.TrustDomain)
	return mgr.Start(ctx)
}

// setupWaypoints runs waypoints for Gateways when it can: it needs the
// waypoint image and the Gateway API CRDs (manifests/gateway-api).
func setupWaypoints(rc RunConfig, mgr manager.Manager, log *slog.Logger) error {
	if rc.Waypoint.Image == "" {
		log.Info("no waypoint image configured: Gateways of class " + gateway.ClassName + " are not run")
		return nil
	}
	if err := gatewayAPIInstalled(mgr); err != nil {
		log.Warn("Gateway API CRDs not installed: no waypoints until they are and the controller restarts", "err", err)
		return nil
	}
	return gateway.Setup(mgr, rc.Waypoint, gateway.RootsSource{Namespace: rc.SystemNamespace, Name: ca.RootsConfigMap, Key: ca.RootsKey},
		log.With("part", "waypoints"))
}

// gatewayAPIInstalled reports whether the apiserver serves Gateways.
func gatewayAPIInstalled(mgr manager.Manager) error {
	_, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: gwv1.GroupName, Kind: "Gateway"}, gwv1.GroupVersion.Version)
	return err
}

// grpcRunnable serves on every replica, leader or not.
type grpcRunnable struct {
	gs    *grpc.Server
	lis   net.Listener
	ready func(net.Addr)
}

func (g grpcRunnable) NeedLeaderElection() bool { return false }

func (g grpcRunnable) Start(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- g.gs.Serve(g.lis) }()
	if g.ready != nil {
		g.ready(g.lis.Addr())
	}
	select {
	case <-ctx.Done():
		// Subscriptions never end by themselves: give unary calls a moment,
		// then cut the streams (data planes reconnect to another replica).
		stopped := make(chan struct{})
		go func() { g.gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			g.gs.Stop()
		}
		return nil
	case err := <-errc:
		return fmt.Errorf("gRPC server: %w", err)
	}
}

var _ manager.LeaderElectionRunnable = grpcRunnable{}
