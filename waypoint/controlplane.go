package waypoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/controlplane"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/svid"
	"github.com/warrenmesh/warren/waypoint/model"
)

// ControlPlane makes a waypoint a member of the mesh through the controller,
// with no files but its service account token and the mesh roots: it has
// its own identity signed by the CA (a P-256 key made here, renewed at half
// its life), and subscribes as the waypoint (Hello.waypoint) to the
// Services, routes and peers it serves from.
type ControlPlane struct {
	// Client is the connection to the controller; its token is the
	// waypoint's own ServiceAccount's.
	Client *controlplane.Client
	// Self is the waypoint, "<namespace>/<name>"; it runs as the
	// ServiceAccount of that name, which is its identity.
	Self        string
	TrustDomain string
	// Bundle is the PEM of the mesh roots given at start; Roots (which the
	// Client verifies the controller with) become Bundle plus the roots the
	// CA answers with.
	Bundle []byte
	Roots  *identity.Roots
	Log    *slog.Logger
}

// Identity is the waypoint's SPIFFE ID: its ServiceAccount's.
func (c *ControlPlane) Identity() (identity.ID, error) {
	ns, name, ok := strings.Cut(c.Self, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return identity.ID{}, fmt.Errorf("waypoint %q is not <namespace>/<name>", c.Self)
	}
	return identity.ID{TrustDomain: c.TrustDomain, Namespace: ns, ServiceAccount: name}, nil
}

func (c *ControlPlane) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

// sign has one certificate signed and takes the CA's roots.
func (c *ControlPlane) sign(ctx context.Context) (*tls.Certificate, error) {
	id, err := c.Identity()
	if err != nil {
		return nil, err
	}
	cert, rootsPEM, err := svid.Sign(ctx, id, c.Client.Sign)
	if err != nil {
		return nil, err
	}
	if len(rootsPEM) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(c.Bundle)
		if !pool.AppendCertsFromPEM(rootsPEM) {
			return nil, errors.New("CA answered roots without a certificate")
		}
		c.Roots.Store(pool)
	}
	return cert, nil
}

// Certificate gets the waypoint's first certificate, retrying until the CA
// signs it or ctx ends.
func (c *ControlPlane) Certificate(ctx context.Context) (*identity.CertSource, error) {
	if _, err := c.Identity(); err != nil {
		return nil, err
	}
	cert, err := svid.Obtain(ctx, c.sign, func(err error, wait time.Duration) {
		c.log().Info("certificate request failed, retrying", "waypoint", c.Self, "err", err, "in", wait)
	})
	if err != nil {
		return nil, err
	}
	c.log().Info("certificate issued", "waypoint", c.Self, "not_after", cert.Leaf.NotAfter)
	return identity.NewCertSource(cert), nil
}

// Renew keeps src renewed at half its life until ctx ends.
func (c *ControlPlane) Renew(ctx context.Context, src *identity.CertSource) {
	svid.Renew(ctx, src, c.sign, func(cert *tls.Certificate) {
		c.log().Info("certificate renewed", "waypoint", c.Self, "not_after", cert.Leaf.NotAfter)
	}, func(leaf *x509.Certificate, err error, retry time.Duration) {
		c.log().Warn("certificate renewal failed, keeping the valid one", "waypoint", c.Self, "not_after", leaf.NotAfter, "retry_in", retry, "err", err)
	})
}

// Run subscribes as the waypoint until ctx ends (reconnecting with
// backoff) and hands every update, as the whole WaypointConfig held, to set
// (Waypoint.SetConfig: it compiles and swaps atomically): nil acks it, an
// error nacks it with that error and the previous configuration stays.
func (c *ControlPlane) Run(ctx context.Context, set func(*meshv1.WaypointConfig) error) error {
	if _, err := c.Identity(); err != nil {
		return err
	}
	return c.Client.Run(ctx, &meshv1.Hello{Waypoint: c.Self}, func(_ uint64, res map[string]*meshv1.Resource) error {
		return set(model.FromResources(res))
	})
}
