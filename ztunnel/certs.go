package ztunnel

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
)

// svidLifetime is what a minted SVID gets, as the controller's CA gives.
const svidLifetime = 24 * time.Hour

// loadRoots reads the mesh CA bundle (and the minting CA, which must be in it).
func loadRoots(c *Config) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range []string{c.CABundle, c.CACert} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("ca bundle: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("ca bundle %s: no certificate", f)
		}
	}
	return pool, nil
}

// loadCerts returns a certificate per local service account: from the
// configured files, or minted with the configured CA key (tests and
// benchmarks only: a node must never hold the mesh CA's key). The function
// it returns loads the certificate of a service account the configuration's
// pods did not name (pods that come from the node agent).
func loadCerts(c *Config, now time.Time) (map[identity.ID]*identity.CertSource, func(identity.ID) (*identity.CertSource, error), error) {
	var mint func(identity.ID) (*tls.Certificate, error)
	if c.CAKey != "" {
		ca, err := tls.LoadX509KeyPair(c.CACert, c.CAKey)
		if err != nil {
			return nil, nil, fmt.Errorf("minting CA: %w", err)
		}
		caCert, err := x509.ParseCertificate(ca.Certificate[0])
		if err != nil {
			return nil, nil, fmt.Errorf("minting CA: %w", err)
		}
		signer, ok := ca.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, nil, errors.New("minting CA: key cannot sign")
		}
		mint = func(id identity.ID) (*tls.Certificate, error) { return mintSVID(caCert, signer, id, now) }
	}
	load := func(id identity.ID) (*identity.CertSource, error) {
		var cert *tls.Certificate
		if pair, ok := c.Certs[certKey(id)]; ok {
			kp, err := tls.LoadX509KeyPair(pair.Cert, pair.Key)
			if err != nil {
				return nil, fmt.Errorf("certificate for %s: %w", id, err)
			}
			if kp.Leaf == nil {
				if kp.Leaf, err = x509.ParseCertificate(kp.Certificate[0]); err != nil {
					return nil, fmt.Errorf("certificate for %s: %w", id, err)
				}
			}
			got, err := identity.FromCertificate(kp.Leaf)
			if err != nil || got != id {
				return nil, fmt.Errorf("certificate for %s names %v (%v)", id, got, err)
			}
			cert = &kp
		} else if mint != nil {
			var err error
			if cert, err = mint(id); err != nil {
				return nil, fmt.Errorf("mint %s: %w", id, err)
			}
		} else {
			return nil, fmt.Errorf("no certificate for %s", id)
		}
		return identity.NewCertSource(cert), nil
	}
	out := map[identity.ID]*identity.CertSource{}
	for i := range c.Pods {
		id := c.Pods[i].Identity()
		if out[id] != nil {
			continue
		}
		src, err := load(id)
		if err != nil {
			return nil, nil, err
		}
		out[id] = src
	}
	return out, load, nil
}

func mintSVID(ca *x509.Certificate, caKey crypto.Signer, id identity.ID, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(svidLifetime)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// WriteCA creates a CA certificate and key in PEM files, for tests and
// benchmarks that let ztunnels mint their SVIDs (Config.CAKey).
func WriteCA(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	tmpl.Subject.CommonName = "warren test CA"
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
}
