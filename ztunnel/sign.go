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

	"github.com/warrenmesh/warren/internal/identity"
)

// SignFunc sends a PEM certificate signing request to the mesh CA and
// returns the PEM chain (leaf first) and the CA's PEM roots (may be empty).
// ControlPlane.Sign is one.
type SignFunc func(ctx context.Context, csrPEM []byte) (chainPEM, rootsPEM []byte, err error)

// signTimeout bounds how long serving a new pod waits for its first
// certificate: the controller may not have seen the pod on this node yet.
const signTimeout = 20 * time.Second

// signed returns a certificate for a local identity from the CA, and keeps
// it renewed for as long as the tunnel runs. The key is made here and never
// leaves the node; only the CSR does.
func (t *Tunnel) signed(id identity.ID) (*identity.CertSource, error) {
	ctx, cancel := context.WithTimeout(t.runCtx, signTimeout)
	defer cancel()
	var (
		cert *tls.Certificate
		err  error
	)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if cert, err = t.signOnce(ctx, id); err == nil {
			break
		}
		t.metrics.certs.WithLabelValues("error").Inc()
		t.log.Info("certificate request failed, retrying", "identity", id, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("certificate for %s: %w", id, err)
		case <-time.After(wait):
		}
	}
	t.metrics.certs.WithLabelValues("issued").Inc()
	src := identity.NewCertSource(cert)
	t.log.Info("certificate issued", "identity", id, "not_after", cert.Leaf.NotAfter)
	go t.renew(id, src)
	return src, nil
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
