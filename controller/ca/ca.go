// Package ca is Warren's mesh certificate authority. It keeps an ECDSA P-256
// root (or an operator's intermediate) in a Secret, and signs short-lived
// X.509 SVIDs (one URI SAN, spiffe://<trust domain>/ns/<ns>/sa/<sa>) from
// certificate signing requests, after checking who asks (Authenticator),
// what they ask for (CheckCSR) and whether they may have it (Authorizer).
package ca

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
)

// Defaults.
const (
	DefaultSVIDTTL = 24 * time.Hour
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
	// backdate covers clock skew between the controller and the nodes.
	backdate = 5 * time.Minute
)

// CA signs SVIDs with one key. It is safe for concurrent use.
type CA struct {
	trustDomain string
	ttl         time.Duration
	now         func() time.Time
	key         crypto.Signer
	cert        *x509.Certificate   // signs the SVIDs
	chain       []*x509.Certificate // cert's issuers below the root, leaf first
	roots       []*x509.Certificate
}

// Options are the knobs of a CA.
type Options struct {
	// TrustDomain defaults to cluster.local.
	TrustDomain string
	// SVIDTTL defaults to 24 h.
	SVIDTTL time.Duration
	// Now defaults to time.Now; tests set it.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	o.TrustDomain = cmp.Or(o.TrustDomain, identity.DefaultTrustDomain)
	o.SVIDTTL = cmp.Or(o.SVIDTTL, DefaultSVIDTTL)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// NewRoot generates a self-signed ECDSA P-256 root.
func NewRoot(o Options) (*CA, error) {
	o = o.withDefaults()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := o.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Warren"}, CommonName: "Warren mesh root " + o.TrustDomain},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(DefaultRootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: o.TrustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root: %w", err)
	}
	return &CA{trustDomain: o.TrustDomain, ttl: o.SVIDTTL, now: o.Now, key: key, cert: cert, roots: []*x509.Certificate{cert}}, nil
}

// Load builds a CA from PEM: certPEM is the signing certificate followed by
// its issuers up to (not necessarily including) a root, keyPEM its private
// key (PKCS#8, SEC 1 or PKCS#1), rootsPEM the trust anchors that data planes
// get. For a self-signed root all three name the same certificate.
func Load(certPEM, keyPEM, rootsPEM []byte, o Options) (*CA, error) {
	o = o.withDefaults()
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	roots, err := parseCerts(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("roots: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	ca := &CA{trustDomain: o.TrustDomain, ttl: o.SVIDTTL, now: o.Now, key: key, cert: certs[0], roots: roots}
	for _, c := range certs[1:] {
		if !isRoot(c, roots) {
			ca.chain = append(ca.chain, c)
		}
	}
	if !ca.cert.IsCA || ca.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("signing certificate is not a CA that may sign certificates")
	}
	if !publicKeysEqual(ca.cert.PublicKey, key.Public()) {
		return nil, errors.New("private key does not match the signing certificate")
	}
	// Refuse a chain the data planes would refuse, now rather than at every
	// handshake.
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range ca.chain {
		inter.AddCert(c)
	}
	if _, err := ca.cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: o.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("signing certificate does not chain to the roots: %w", err)
	}
	return ca, nil
}

// PEM returns what Load needs to rebuild this CA.
func (ca *CA) PEM() (certPEM, keyPEM, rootsPEM []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return encodeCerts(append([]*x509.Certificate{ca.cert}, ca.chain...)), keyPEM, encodeCerts(ca.roots), nil
}

// RootsPEM returns the trust anchors for the data planes.
func (ca *CA) RootsPEM() []byte { return encodeCerts(ca.roots) }

// Roots returns the trust anchors as a pool.
func (ca *CA) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, r := range ca.roots {
		pool.AddCert(r)
	}
	return pool
}

// TrustDomain is the trust domain the CA signs for.
func (ca *CA) TrustDomain() string { return ca.trustDomain }

// Sign issues an SVID for id with the CSR's public key, valid for the CA's
// TTL (cut short when the signing certificate expires first). It returns the
// chain in PEM, leaf first, without the root. Sign does not check the CSR or
// the caller: the Signer does that.
func (ca *CA) Sign(csr *x509.CertificateRequest, id identity.ID) ([]byte, error) {
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", id, err)
	}
	now := ca.now()
	notAfter := now.Add(ca.ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", id, err)
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range append([]*x509.Certificate{ca.cert}, ca.chain...) {
		if !isRoot(c, ca.roots) {
			_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	}
	return buf.Bytes(), nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func isRoot(c *x509.Certificate, roots []*x509.Certificate) bool {
	for _, r := range roots {
		if c.Equal(r) {
			return true
		}
	}
	return false
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func parseCerts(data []byte) ([]*x509.Certificate, error) { return identity.ParseCertificatesPEM(data) }

func parseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("key: no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("key: PEM block %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key: %T cannot sign", k)
	}
	return s, nil
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}
