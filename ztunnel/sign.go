package ztunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
)

// SignFunc sends a PEM certificate signing request to the mesh CA and
// returns the PEM chain (leaf first) and the CA's PEM roots (may be empty).
// ControlPlane.Sign is one.
type SignFunc func(ctx context.Context, csrPEM []byte) (chainPEM, rootsPEM []byte, err error)

// signTimeout bounds one certificate request to the CA.
const signTimeout = 20 * time.Second

// certWait bounds how long a handshake waits for a certificate still on its
// way from the CA; then it fails (closed), and the next one waits again.
const certWait = hbone.DefaultHandshakeTimeout

// certEntry is a local identity's certificate as handshakes use it: ready at
// once when loaded from a file, or once the CA answered (fetchCert). Until
// then, handshakes wait for it (certWait at most), so a pod is served, and
// the node agent acked, before its identity's first certificate is issued.
type certEntry struct {
	src   *identity.CertSource
	ready chan struct{} // closed once src holds a certificate
}

func readyCert(src *identity.CertSource) *certEntry {
	e := &certEntry{src: src, ready: make(chan struct{})}
	close(e.ready)
	return e
}

func (e *certEntry) wait(ctx context.Context) error {
	select {
	case <-e.ready:
		return nil
	default:
	}
	timer := time.NewTimer(certWait)
	defer timer.Stop()
	select {
	case <-e.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("%w: the CA has not answered yet", identity.ErrNoCertificate)
	}
}

// getCertificate is the server's tls.Config.GetCertificate.
func (e *certEntry) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if err := e.wait(h.Context()); err != nil {
		return nil, err
	}
	return e.src.GetCertificate(h)
}

// getClientCertificate is the client's tls.Config.GetClientCertificate.
func (e *certEntry) getClientCertificate(r *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if err := e.wait(r.Context()); err != nil {
		return nil, err
	}
	return e.src.GetClientCertificate(r)
}

// fetchCert gets a local identity's first certificate from the CA, retrying
// until it comes or the tunnel stops (the controller may not have seen a new
// pod on this node yet), then keeps it renewed. The key is made here and
// never leaves the node; only the CSR does.
func (t *Tunnel) fetchCert(id identity.ID, e *certEntry) {
	ctx := t.runCtx
	var cert *tls.Certificate
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, signTimeout)
		c, err := t.signOnce(sctx, id)
		cancel()
		if err == nil {
			cert = c
			break
		}
		t.metrics.certs.WithLabelValues("error").Inc()
		t.log.Info("certificate request failed, retrying", "identity", id, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	e.src.Store(cert)
	close(e.ready)
	t.metrics.certs.WithLabelValues("issued").Inc()
	t.log.Info("certificate issued", "identity", id, "not_after", cert.Leaf.NotAfter)
	t.renew(id, e.src)
}

// renew replaces src's certificate at half its lifetime. A failed renewal
// keeps the certificate in force (it is still valid) and retries with
// backoff; it stops with the tunnel.
func (t *Tunnel) renew(id identity.ID, src *identity.CertSource) {
	ctx := t.runCtx
	retry := time.Duration(0)
	for {
		leaf := src.Load().Leaf
		wait := time.Until(renewalTime(leaf))
		if retry > 0 {
			wait = retry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		sctx, cancel := context.WithTimeout(ctx, signTimeout)
		cert, err := t.signOnce(sctx, id)
		cancel()
		if err != nil {
			t.metrics.certs.WithLabelValues("error").Inc()
			// Retry sooner as expiry nears, never in a tight loop.
			retry = max(min(time.Until(leaf.NotAfter)/10, time.Minute), time.Second)
			t.log.Warn("certificate renewal failed, keeping the valid one", "identity", id, "not_after", leaf.NotAfter, "retry_in", retry, "err", err)
			continue
		}
		retry = 0
		src.Store(cert)
		t.metrics.certs.WithLabelValues("renewed").Inc()
		t.log.Info("certificate renewed", "identity", id, "not_after", cert.Leaf.NotAfter)
	}
}

// renewalTime is half-way through the certificate's life.
func renewalTime(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// signOnce makes a key and a CSR for id, has it signed, checks the answer,
// and adds the CA's roots to the tunnel's.
func (t *Tunnel) signOnce(ctx context.Context, id identity.ID) (*tls.Certificate, error) {
	key, csr, err := NewCSR(id)
	if err != nil {
		return nil, err
	}
	chainPEM, rootsPEM, err := t.sign(ctx, csr)
	if err != nil {
		return nil, err
	}
	cert, err := certFromChain(chainPEM, key, id)
	if err != nil {
		return nil, err
	}
	if len(rootsPEM) > 0 {
		pool, err := loadRoots(t.cfg)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(rootsPEM) {
			return nil, errors.New("CA answered roots without a certificate")
		}
		t.roots.Store(pool)
	}
	return cert, nil
}

// NewCSR makes an ECDSA P-256 key and a PEM CSR whose only SAN is id's URI,
// as the controller's CA requires.
func NewCSR(id identity.ID) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("csr: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// certFromChain pairs a signed PEM chain with its key, and checks that the
// leaf is for id and for this key.
func certFromChain(chainPEM []byte, key *ecdsa.PrivateKey, id identity.ID) (*tls.Certificate, error) {
	cert := &tls.Certificate{PrivateKey: key}
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, b.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("CA answered no certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("signed certificate: %w", err)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("signed certificate is not for the key sent")
	}
	if got, err := identity.FromCertificate(leaf); err != nil || got != id {
		return nil, fmt.Errorf("signed certificate names %v (%v), want %s", got, err, id)
	}
	cert.Leaf = leaf
	return cert, nil
}
