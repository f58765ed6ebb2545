package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
)

// ServingCertificate returns a tls.Config.GetCertificate for the
// controller's own gRPC endpoint: a certificate for dnsNames signed by this
// CA, so data planes verify the controller with the mesh roots they already
// trust. It is issued on first use and again after half its lifetime.
func (ca *CA) ServingCertificate(dnsNames []string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var (
		mu   sync.Mutex
		cert *tls.Certificate
	)
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		now := ca.now()
		if cert != nil {
			leaf := cert.Leaf
			if now.Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)) {
				return cert, nil
			}
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("serving key: %w", err)
		}
		serial, err := serialNumber()
		if err != nil {
			return nil, err
		}
		notAfter := now.Add(ca.ttl)
		if notAfter.After(ca.cert.NotAfter) {
			notAfter = ca.cert.NotAfter
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial, DNSNames: dnsNames,
			NotBefore: now.Add(-backdate), NotAfter: notAfter,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
		if err != nil {
			return nil, fmt.Errorf("sign serving certificate: %w", err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse serving certificate: %w", err)
		}
		c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		for _, ic := range ca.chain {
			c.Certificate = append(c.Certificate, ic.Raw)
		}
		cert = c
		return cert, nil
	}
}
