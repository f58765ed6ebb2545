package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ALPN is the only application protocol that Warren's tunnels speak.
const ALPN = "h2"

// ErrNoCertificate is returned when a CertSource has nothing loaded yet.
var ErrNoCertificate = errors.New("no certificate loaded")

// CertSource holds the current certificate of one identity. Handshakes read it
// through an atomic pointer, so Store swaps in a renewed certificate without
// restarting listeners or dropping pooled connections.
type CertSource struct {
	cert atomic.Pointer[tls.Certificate]
}

// NewCertSource returns a source holding cert, which may be nil.
func NewCertSource(cert *tls.Certificate) *CertSource {
	s := &CertSource{}
	s.cert.Store(cert)
	return s
}

// Store replaces the certificate used by handshakes that start from now on.
func (s *CertSource) Store(cert *tls.Certificate) { s.cert.Store(cert) }

// Load returns the current certificate, or nil.
func (s *CertSource) Load() *tls.Certificate { return s.cert.Load() }

// GetCertificate is a tls.Config.GetCertificate.
func (s *CertSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// GetClientCertificate is a tls.Config.GetClientCertificate.
func (s *CertSource) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// Roots holds the mesh CA pool, swappable like CertSource so that a CA
// rotation (old and new roots side by side) needs no restart.
type Roots struct {
	pool atomic.Pointer[x509.CertPool]
}

// NewRoots returns Roots holding pool.
func NewRoots(pool *x509.CertPool) *Roots {
	r := &Roots{}
	r.pool.Store(pool)
	return r
}

// Store replaces the pool that verifications use from now on.
func (r *Roots) Store(pool *x509.CertPool) { r.pool.Store(pool) }

// Load returns the current pool.
func (r *Roots) Load() *x509.CertPool { return r.pool.Load() }

// Authorizer decides whether a verified peer identity may talk to us.
type Authorizer func(peer ID) error

// ErrUnexpectedPeer is wrapped by the errors of the Authorizers in this package.
var ErrUnexpectedPeer = errors.New("unexpected peer identity")

// ExpectID accepts only want.
func ExpectID(want ID) Authorizer {
	return func(peer ID) error {
		if peer != want {
			return fmt.Errorf("%w: got %s, want %s", ErrUnexpectedPeer, peer, want)
		}
		return nil
	}
}

// ExpectTrustDomain accepts any identity of the trust domain td: what an
// inbound listener uses before L4 policy looks at the principal.
func ExpectTrustDomain(td string) Authorizer {
	return func(peer ID) error {
		if peer.TrustDomain != td {
			return fmt.Errorf("%w: %s is not in trust domain %s", ErrUnexpectedPeer, peer, td)
		}
		return nil
	}
}

// TLSOptions configures ServerConfig and ClientConfig.
type TLSOptions struct {
	// Certs is our own certificate. Required.
	Certs *CertSource
	// Roots is the mesh CA pool that the peer's chain must lead to. Required.
	Roots *Roots
	// Authorize checks the peer's SPIFFE ID after its chain verified. Required:
	// a tunnel that accepts any mesh identity must say so with ExpectTrustDomain.
	Authorize Authorizer
	// Now, if set, is the clock used for validity checks (tests).
	Now func() time.Time
}

func (o TLSOptions) validate() error {
	switch {
	case o.Certs == nil:
		return errors.New("TLSOptions: Certs is nil")
	case o.Roots == nil:
		return errors.New("TLSOptions: Roots is nil")
	case o.Authorize == nil:
		return errors.New("TLSOptions: Authorize is nil")
	}
	return nil
}

// ServerConfig returns a TLS 1.3 server configuration that requires a client
// certificate chaining to Roots and whose SPIFFE ID Authorize accepts.
func ServerConfig(o TLSOptions) (*tls.Config, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{ALPN},
		GetCertificate: o.Certs.GetCertificate,
		// Chain and SAN are checked in VerifyConnection, which also runs on resumed
		// sessions, so the standard verifier (which would want a DNS name) is off.
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: verifier(o, x509.ExtKeyUsageClientAuth),
		Time:             o.Now,
	}, nil
}

// ClientConfig returns a TLS 1.3 client configuration that presents Certs and
// requires a server certificate chaining to Roots and whose SPIFFE ID Authorize
// accepts. Host names play no part: the identity is the URI SAN.
func ClientConfig(o TLSOptions) (*tls.Config, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		NextProtos:           []string{ALPN},
		GetClientCertificate: o.Certs.GetClientCertificate,
		// Safe: VerifyConnection below verifies the chain against Roots and the
		// SPIFFE ID; only the DNS host name check is skipped.
		InsecureSkipVerify: true, //nolint:gosec
		VerifyConnection:   verifier(o, x509.ExtKeyUsageServerAuth),
		Time:               o.Now,
	}, nil
}

func verifier(o TLSOptions, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if cs.Version != tls.VersionTLS13 {
			return errors.New("identity: peer did not negotiate TLS 1.3")
		}
		id, err := VerifyChain(cs.PeerCertificates, o.Roots.Load(), usage, now(o.Now))
		if err != nil {
			return err
		}
		if err := o.Authorize(id); err != nil {
			return fmt.Errorf("identity: authorize %s: %w", id, err)
		}
		return nil
	}
}

func now(f func() time.Time) time.Time {
	if f != nil {
		return f()
	}
	return time.Now()
}

// VerifyChain verifies that chain[0] leads to roots with the given extended key
// usage at time t, and returns its SPIFFE ID.
func VerifyChain(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, t time.Time) (ID, error) {
	if len(chain) == 0 {
		return ID{}, errors.New("identity: peer sent no certificate")
	}
	if roots == nil {
		return ID{}, errors.New("identity: no trust roots loaded")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   t,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return ID{}, fmt.Errorf("identity: verify peer chain: %w", err)
	}
	id, err := FromCertificate(chain[0])
	if err != nil {
		return ID{}, fmt.Errorf("identity: peer certificate: %w", err)
	}
	return id, nil
}

// PeerID returns the SPIFFE ID of a connection's peer. Call it only on a
// connection whose handshake used ServerConfig or ClientConfig, which already
// verified the chain.
func PeerID(cs tls.ConnectionState) (ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return ID{}, errors.New("identity: peer sent no certificate")
	}
	return FromCertificate(cs.PeerCertificates[0])
}
