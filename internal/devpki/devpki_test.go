package devpki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
)

// TestMutualTLS checks that the certificates do what the benchmark's HAProxy pair needs, read
// back from their PEM: a TLS 1.3 handshake where each side verifies the other against the CA,
// and that a certificate issued for the wrong purpose is refused.
func TestMutualTLS(t *testing.T) {
	ca, err := NewCA(Spec{CommonName: "bench-ca"})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("CA PEM does not parse")
	}
	issue := func(name string, u x509.ExtKeyUsage) tls.Certificate {
		l, err := ca.Issue(Spec{CommonName: name, DNSNames: []string{name}, ExtKeyUsage: []x509.ExtKeyUsage{u}})
		if err != nil {
			t.Fatal(err)
		}
		key, err := l.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(l.CertPEM(), key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server := issue("node2.wbench", x509.ExtKeyUsageServerAuth)
	client := issue("node1.wbench", x509.ExtKeyUsageClientAuth)

	tests := []struct {
		name       string
		clientCert tls.Certificate
		serverName string
		wantErr    bool
	}{
		{"mutual", client, "node2.wbench", false},
		{"client cert used as a server name", client, "node1.wbench", true},
		{"server cert used as a client cert", server, "node2.wbench", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvCert := server
			if tt.serverName == "node1.wbench" {
				srvCert = client
			}
			// Loopback TCP rather than net.Pipe: the server writes session tickets that an
			// unbuffered pipe would block on.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			errc := make(chan error, 1)
			go func() {
				a, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				defer a.Close()
				errc <- tls.Server(a, &tls.Config{
					Certificates: []tls.Certificate{srvCert},
					ClientCAs:    pool,
					ClientAuth:   tls.RequireAndVerifyClientCert,
					MinVersion:   tls.VersionTLS13,
				}).Handshake()
			}()
			b, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			cli := tls.Client(b, &tls.Config{
				Certificates: []tls.Certificate{tt.clientCert},
				RootCAs:      pool,
				ServerName:   tt.serverName,
				MinVersion:   tls.VersionTLS13,
			})
			cerr := cli.Handshake()
			b.Close()
			// TLS 1.3 clients finish before the server has checked the client certificate.
			if serr := <-errc; cerr == nil {
				cerr = serr
			}
			if (cerr != nil) != tt.wantErr {
				t.Errorf("handshake err = %v, wantErr %v", cerr, tt.wantErr)
			}
		})
	}
}

// An intermediate chains to the root, and what it signs verifies through it.
func TestIntermediateChain(t *testing.T) {
	root, err := NewCA(Spec{CommonName: "root"})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Issue(Spec{CommonName: "intermediate", IsCA: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.Issue(Spec{CommonName: "leaf", DNSNames: []string{"leaf.test"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	if !inter.Cert.IsCA || leaf.Cert.IsCA || !root.Cert.IsCA {
		t.Errorf("IsCA root %v, intermediate %v, leaf %v", root.Cert.IsCA, inter.Cert.IsCA, leaf.Cert.IsCA)
	}
	inters := x509.NewCertPool()
	inters.AddCert(inter.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: inters, DNSName: "leaf.test"}); err != nil {
		t.Errorf("leaf through the intermediate: %v", err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), DNSName: "leaf.test"}); err == nil {
		t.Error("leaf verified without its intermediate")
	}
}
