// Package devpki mints throwaway certificates: a self-signed CA and the
// leaves (or intermediates) it signs, ECDSA P-256, PEM-encoded on demand. It
// serves tests (internal/identity/identitytest builds on it), the benchmark's
// TLS proxies (test/bench) and the local cluster's PKI (hack/cluster). It
// returns errors rather than failing a test, and depends on the standard
// library only. Production certificates come from controller/ca, never from
// here.
package devpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// KeyPair is a certificate and its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Spec describes a certificate. Zero fields take defaults: valid from a
// minute ago (tools' clocks differ a little) for a day; key usage
// certificate and CRL signing for a CA, digital signature for a leaf.
type Spec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	URIs         []*url.URL
	ExtKeyUsage  []x509.ExtKeyUsage
	KeyUsage     x509.KeyUsage
	NotBefore    time.Time
	NotAfter     time.Time
	// IsCA makes a CA: NewCA sets it; with Issue, an intermediate.
	IsCA bool
}

// NewCA returns a self-signed CA.
func NewCA(s Spec) (*KeyPair, error) {
	s.IsCA = true
	return create(s, nil)
}

// Issue returns a certificate for s signed by ca.
func (ca *KeyPair) Issue(s Spec) (*KeyPair, error) { return create(s, ca) }

func create(s Spec, parent *KeyPair) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devpki: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("devpki: serial: %w", err)
	}
	now := time.Now()
	if s.NotBefore.IsZero() {
		s.NotBefore = now.Add(-time.Minute)
	}
	if s.NotAfter.IsZero() {
		s.NotAfter = now.Add(24 * time.Hour)
	}
	if s.KeyUsage == 0 {
		s.KeyUsage = x509.KeyUsageDigitalSignature
		if s.IsCA {
			s.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.CommonName, Organization: s.Organization},
		NotBefore:             s.NotBefore,
		NotAfter:              s.NotAfter,
		KeyUsage:              s.KeyUsage,
		ExtKeyUsage:           s.ExtKeyUsage,
		DNSNames:              s.DNSNames,
		IPAddresses:           s.IPs,
		URIs:                  s.URIs,
		BasicConstraintsValid: s.IsCA,
		IsCA:                  s.IsCA,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("devpki: certificate %q: %w", s.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devpki: certificate %q: %w", s.CommonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// CertPEM is the certificate in PEM.
func (kp *KeyPair) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.Cert.Raw})
}

// KeyPEM is the private key in PEM (PKCS #8).
func (kp *KeyPair) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(kp.Key)
	if err != nil {
		return nil, fmt.Errorf("devpki: key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TLS is the pair as crypto/tls takes it (Leaf filled in).
func (kp *KeyPair) TLS() *tls.Certificate {
	return &tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
}

// Pool is a certificate pool holding only kp's certificate.
func (kp *KeyPair) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(kp.Cert)
	return p
}
