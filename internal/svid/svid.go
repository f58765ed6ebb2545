// Package svid is a data plane's side of the mesh CA: an ECDSA P-256 key
// and a CSR for an identity (the key never leaves the process), the signed
// chain checked against both, and a certificate kept renewed at half its
// life. The ztunnel uses it for its pods' identities, the waypoint for its
// own.
package svid

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
type SignFunc func(ctx context.Context, csrPEM []byte) (chainPEM, rootsPEM []byte, err error)

// SignTimeout bounds one certificate request to the CA.
const SignTimeout = 20 * time.Second

// Sign makes a key and a CSR for id, has sign sign it, and checks the
// answer: the certificate (with its parsed leaf) and the CA's PEM roots.
func Sign(ctx context.Context, id identity.ID, sign SignFunc) (*tls.Certificate, []byte, error) {
	key, csr, err := NewCSR(id)
	if err != nil {
		return nil, nil, err
	}
	chainPEM, rootsPEM, err := sign(ctx, csr)
	if err != nil {
		return nil, nil, err
	}
	cert, err := CertFromChain(chainPEM, key, id)
	if err != nil {
		return nil, nil, err
	}
	return cert, rootsPEM, nil
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

// CertFromChain pairs a signed PEM chain with its key, and checks that the
// leaf is for id and for this key.
func CertFromChain(chainPEM []byte, key *ecdsa.PrivateKey, id identity.ID) (*tls.Certificate, error) {
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

// RenewalTime is half-way through the certificate's life.
func RenewalTime(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// Obtain calls sign (each call bounded by SignTimeout) until it returns a
// certificate, waiting between failures from 100 ms doubling to 5 s (the
// controller may not know the caller yet); failed, if set, is told each
// failure. It returns ctx's error when ctx ends first.
func Obtain(ctx context.Context, sign func(context.Context) (*tls.Certificate, error), failed func(err error, wait time.Duration)) (*tls.Certificate, error) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, SignTimeout)
		c, err := sign(sctx)
		cancel()
		if err == nil {
			return c, nil
		}
		if failed != nil {
			failed(err, wait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Renew replaces src's certificate with a new one from sign at half its
// lifetime, until ctx ends. A failed renewal keeps the certificate in force
// (it is still valid) and retries sooner as expiry nears, never in a tight
// loop. renewed and failed, if set, are told each outcome.
func Renew(ctx context.Context, src *identity.CertSource, sign func(context.Context) (*tls.Certificate, error),
	renewed func(*tls.Certificate), failed func(leaf *x509.Certificate, err error, retry time.Duration)) {
	retry := time.Duration(0)
	for {
		leaf := src.Load().Leaf
		wait := time.Until(RenewalTime(leaf))
		if retry > 0 {
			wait = retry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		sctx, cancel := context.WithTimeout(ctx, SignTimeout)
		cert, err := sign(sctx)
		cancel()
		if err != nil {
			retry = max(min(time.Until(leaf.NotAfter)/10, time.Minute), time.Second)
			if failed != nil {
				failed(leaf, err, retry)
			}
			continue
		}
		retry = 0
		src.Store(cert)
		if renewed != nil {
			renewed(cert)
		}
	}
}
