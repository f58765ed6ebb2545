// Package identitytest mints a throwaway mesh CA and leaf SVIDs (ECDSA P-256)
// for tests, on internal/devpki. Nothing here is fit for production keys.
package identitytest

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/devpki"
	"github.com/warrenmesh/warren/internal/identity"
)

// CA is a self-signed root that issues SVIDs.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA returns a fresh root CA valid from an hour ago for a day.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	kp, err := devpki.NewCA(devpki.Spec{CommonName: "warren test root", Organization: []string{"warren test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)})
	if err != nil {
		tb.Fatalf("identitytest: %v", err)
	}
	return &CA{Cert: kp.Cert, Key: kp.Key.(*ecdsa.PrivateKey)}
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Roots returns identity.Roots holding only this CA.
func (ca *CA) Roots() *identity.Roots { return identity.NewRoots(ca.Pool()) }

// LeafOptions tweaks Issue; the zero value gives a valid SVID for a day.
type LeafOptions struct {
	NotBefore, NotAfter time.Time
	// URIs overrides the URI SANs (to test certificates with none or several).
	URIs []*url.URL
	// ExtKeyUsage overrides the default of server and client auth.
	ExtKeyUsage []x509.ExtKeyUsage
}

// Issue returns a leaf SVID for id, with both client and server auth usages as
// Istio's workload certificates have.
func (ca *CA) Issue(tb testing.TB, id identity.ID) *tls.Certificate {
	tb.Helper()
	return ca.IssueWith(tb, id, LeafOptions{})
}

// IssueWith is Issue with options.
func (ca *CA) IssueWith(tb testing.TB, id identity.ID, o LeafOptions) *tls.Certificate {
	tb.Helper()
	uris := o.URIs
	if uris == nil {
		u, err := url.Parse(id.String())
		if err != nil {
			tb.Fatalf("identitytest: %v", err)
		}
		uris = []*url.URL{u}
	}
	eku := o.ExtKeyUsage
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	parent := &devpki.KeyPair{Cert: ca.Cert, Key: ca.Key}
	leaf, err := parent.Issue(devpki.Spec{URIs: uris, ExtKeyUsage: eku, NotBefore: o.NotBefore, NotAfter: o.NotAfter})
	if err != nil {
		tb.Fatalf("identitytest: leaf: %v", err)
	}
	return leaf.TLS()
}
