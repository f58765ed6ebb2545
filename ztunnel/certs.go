package ztunnel

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/warrenmesh/warren/internal/identity"
)

// loadRoots reads the mesh CA bundle.
func loadRoots(c *Config) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(c.CABundle)
	if err != nil {
		return nil, fmt.Errorf("ca bundle: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ca bundle %s: no certificate", c.CABundle)
	}
	return pool, nil
}

// loadCerts returns a certificate per local service account of the
// configuration's pods, from the configured files. The function it returns
// loads the certificate of a service account those pods did not name (pods
// that come from the node agent).
func loadCerts(c *Config) (map[identity.ID]*identity.CertSource, func(identity.ID) (*identity.CertSource, error), error) {
	load := func(id identity.ID) (*identity.CertSource, error) {
		pair, ok := c.Certs[certKey(id)]
		if !ok {
			return nil, fmt.Errorf("no certificate for %s", id)
		}
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
		return identity.NewCertSource(&kp), nil
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
