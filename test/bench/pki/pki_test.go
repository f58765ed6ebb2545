package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
)

// TestMutualTLS checks that the certificates do what the HAProxy pair needs: a TLS 1.3 handshake
// where each side verifies the other against the CA, and that a certificate issued for the wrong
// purpose is refused.
func TestMutualTLS(t *testing.T) {
	ca, err := NewCA("bench-ca")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM) {
		t.Fatal("CA PEM does not parse")
	}
	issue := func(name string, u x509.ExtKeyUsage) tls.Certificate {
		l, err := ca.Issue(name, u)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
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

func TestBundle(t *testing.T) {
	l := Leaf{CertPEM: []byte("C\n"), KeyPEM: []byte("K\n")}
	if got := string(l.Bundle()); got != "C\nK\n" {
		t.Errorf("Bundle = %q", got)
	}
}
