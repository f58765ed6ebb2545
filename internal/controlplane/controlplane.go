// Package controlplane is a data plane's client of the controller
// (api/proto/mesh/v1): one TLS connection, verified against the mesh roots
// in force at each handshake, whose calls carry a service account token read
// from a file at each call (the kubelet rotates it); certificate signing;
// and a subscription that keeps the resources held, applies every update on
// top of what was last accepted, and acks or nacks it. The ztunnel and the
// waypoint both use it, each with its own Hello and its own conversion.
package controlplane

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/identity"
)

// Client is a connection to the controller. Its zero value is not usable:
// set the fields, then call Sign or Run.
type Client struct {
	// Addr is the controller's gRPC address (host:port).
	Addr string
	// ServerName is the name in the controller's serving certificate; the
	// host of Addr if empty.
	ServerName string
	// TokenFile holds the service account token.
	TokenFile string
	// Roots verify the controller: the mesh roots.
	Roots *identity.Roots
	Log   *slog.Logger
	// MaxBackoff caps the wait between reconnections; 10 s if zero.
	MaxBackoff time.Duration

	once   sync.Once
	conn   *grpc.ClientConn
	client meshv1.DistributionClient
	err    error
}

func (c *Client) dial() (meshv1.DistributionClient, error) {
	c.once.Do(func() {
		if c.Log == nil {
			c.Log = slog.New(slog.DiscardHandler)
		}
		name := c.ServerName
		if name == "" {
			host, _, err := net.SplitHostPort(c.Addr)
			if err != nil {
				c.err = fmt.Errorf("controller address %q: %w", c.Addr, err)
				return
			}
			name = host
		}
		tc := &tls.Config{
			MinVersion: tls.VersionTLS13,
			// The roots can change while the connection lives (the CA
			// answers with its current ones), so verify by hand against
			// the roots in force at each handshake.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("controller sent no certificate")
				}
				inter := x509.NewCertPool()
				for _, cert := range cs.PeerCertificates[1:] {
					inter.AddCert(cert)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: c.Roots.Load(), Intermediates: inter, DNSName: name})
				if err != nil {
					return fmt.Errorf("controller certificate: %w", err)
				}
				return nil
			},
		}
		c.conn, c.err = grpc.NewClient(c.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithPerRPCCredentials(tokenFile(c.TokenFile)))
		if c.err == nil {
			c.client = meshv1.NewDistributionClient(c.conn)
		}
	})
	return c.client, c.err
}

// Close ends the connection to the controller.
func (c *Client) Close() error {
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}

// tokenFile is a bearer token read from a file at every call.
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("service account token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(string(b))}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }

// Sign sends a PEM CSR to the controller's CA: the PEM chain (leaf first)
// and the CA's PEM roots (an svid.SignFunc).
func (c *Client) Sign(ctx context.Context, csrPEM []byte) ([]byte, []byte, error) {
	cl, err := c.dial()
	if err != nil {
		return nil, nil, err
	}
	resp, err := cl.SignCertificate(ctx, &meshv1.SignRequest{Csr: csrPEM})
	if err != nil {
		return nil, nil, fmt.Errorf("controller CA: %w", err)
	}
	return resp.Chain, resp.Roots, nil
}

// ApplyFunc takes the whole set of resources held after an update, by key:
// nil acks the update; an error nacks it, and the previous set stays held
// (the controller sends the refused resources again with its next change).
// It must not keep or change the map.
type ApplyFunc func(version uint64, res map[string]*meshv1.Resource) error

// Run subscribes with hello until ctx ends, reconnecting with backoff, and
// hands every update to apply.
func (c *Client) Run(ctx context.Context, hello *meshv1.Hello, apply ApplyFunc) error {
	cl, err := c.dial()
	if err != nil {
		return err
	}
	maxWait := cmp.Or(c.MaxBackoff, 10*time.Second)
	wait := 200 * time.Millisecond
	for {
		start := time.Now()
		err := c.subscribe(ctx, cl, hello, apply)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			wait = 200 * time.Millisecond // it had worked for a while
		}
		c.Log.Warn("controller stream ended, reconnecting", "addr", c.Addr, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

func (c *Client) subscribe(ctx context.Context, cl meshv1.DistributionClient, hello *meshv1.Hello, apply ApplyFunc) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cl.Subscribe(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: hello}}); err != nil {
		return err
	}
	var held map[string]*meshv1.Resource
	for {
		u, err := st.Recv()
		if err != nil {
			return err
		}
		next := map[string]*meshv1.Resource{}
		if !u.Snapshot {
			if held == nil {
				return errors.New("first update of the stream is not a snapshot")
			}
			next = maps.Clone(held)
		}
		for _, k := range u.Removals {
			delete(next, k)
		}
		for _, r := range u.Upserts {
			next[r.Key] = r
		}
		var req *meshv1.SubscribeRequest
		if err := apply(u.Version, next); err != nil {
			c.Log.Warn("configuration refused", "version", u.Version, "err", err)
			req = &meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Nack{Nack: &meshv1.Nack{Version: u.Version, Error: err.Error()}}}
			if held == nil {
				held = map[string]*meshv1.Resource{} // a snapshot was seen
			}
		} else {
			held = next
			c.Log.Debug("configuration applied", "version", u.Version, "snapshot", u.Snapshot, "resources", len(next))
			req = &meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Ack{Ack: &meshv1.Ack{Version: u.Version}}}
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
}
