// Package identitytest mints a throwaway mesh CA and leaf SVIDs (ECDSA P-256)
// for tests. Nothing here is fit for production keys.
package identitytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
)

var serial atomic.Int64

// CA is a self-signed root that issues SVIDs.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA returns a fresh root CA valid from an hour ago for a day.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("identitytest: CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{Organization: []string{"warren test"}, CommonName: "warren test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("identitytest: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("identitytest: parse CA certificate: %v", err)
	}
	return &CA{Cert: cert, Key: key}
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("identitytest: leaf key: %v", err)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Minute)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
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
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		tb.Fatalf("identitytest: leaf certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("identitytest: parse leaf: %v", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
