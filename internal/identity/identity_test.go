package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
)

func TestParse(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		in      string
		want    identity.ID
		wantErr bool
	}{
		{in: "spiffe://cluster.local/ns/default/sa/web", want: identity.New("default", "web")},
		{in: "spiffe://example.org/ns/kube-system/sa/a.b-c", want: identity.ID{TrustDomain: "example.org", Namespace: "kube-system", ServiceAccount: "a.b-c"}},
		{in: "spiffe://td_1/ns/n1/sa/s1", want: identity.ID{TrustDomain: "td_1", Namespace: "n1", ServiceAccount: "s1"}},
		{in: "", wantErr: true},
		{in: "https://cluster.local/ns/a/sa/b", wantErr: true},
		{in: "spiffe://cluster.local", wantErr: true},
		{in: "spiffe:///ns/a/sa/b", wantErr: true},
		{in: "spiffe://Cluster.local/ns/a/sa/b", wantErr: true},
		{in: "spiffe://cluster.local:443/ns/a/sa/b", wantErr: true},
		{in: "spiffe://user@cluster.local/ns/a/sa/b", wantErr: true},
		{in: "spiffe://cluster.local/ns/a/sa/b/", wantErr: true},
		{in: "spiffe://cluster.local/ns/a/sa/b/c", wantErr: true},
		{in: "spiffe://cluster.local/ns//sa/b", wantErr: true},
		{in: "spiffe://cluster.local/ns/a/sa/", wantErr: true},
		{in: "spiffe://cluster.local/sa/b/ns/a", wantErr: true},
		{in: "spiffe://cluster.local/ns/A/sa/b", wantErr: true},
		{in: "spiffe://cluster.local/ns/a.b/sa/b", wantErr: true},
		{in: "spiffe://cluster.local/ns/-a/sa/b", wantErr: true},
		{in: "spiffe://cluster.local/ns/a/sa/b..c", wantErr: true},
		{in: "spiffe://cluster.local/ns/a/sa/b%2f", wantErr: true},
		{in: "spiffe://cluster.local/ns/a/sa/b?x=1", wantErr: true},
		{in: "spiffe://cluster.local/ns/a/sa/b#f", wantErr: true},
		{in: "spiffe://cluster.local/ns/" + long + "/sa/b", wantErr: true},
		{in: "spiffe://cluster.local/ns/" + long[:63] + "/sa/b", want: identity.New(long[:63], "b")},
	}
	for _, tt := range tests {
		got, err := identity.Parse(tt.in)
		if tt.wantErr {
			if err == nil || !errors.Is(err, identity.ErrInvalidID) {
				t.Errorf("Parse(%q) = %v, %v; want ErrInvalidID", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			continue
		}
		if got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/a/sa/b", "spiffe://x/ns/a-b/sa/c.d", "spiffe://", "spiffe://a/ns/b/sa/c/d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := identity.Parse(s)
		if err != nil {
			return
		}
		// Anything accepted must be in canonical form and survive a round trip.
		if id.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, id.String())
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted an ID that does not validate: %v", s, err)
		}
	})
}

func TestFromCertificate(t *testing.T) {
	ca := identitytest.NewCA(t)
	id := identity.New("ns1", "sa1")
	if got, err := identity.FromCertificate(ca.Issue(t, id).Leaf); err != nil || got != id {
		t.Fatalf("FromCertificate = %v, %v; want %v", got, err, id)
	}
	u1, _ := url.Parse("spiffe://cluster.local/ns/a/sa/b")
	u2, _ := url.Parse("spiffe://cluster.local/ns/c/sa/d")
	for name, uris := range map[string][]*url.URL{"none": {}, "two": {u1, u2}} {
		c := ca.IssueWith(t, id, identitytest.LeafOptions{URIs: uris})
		if _, err := identity.FromCertificate(c.Leaf); err == nil {
			t.Errorf("%s URI SANs: accepted", name)
		}
	}
}

// handshake runs a TLS handshake over a loopback TCP connection and returns
// the client's and the server's errors.
func handshake(t *testing.T, server, client *tls.Config) (srvErr, cliErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		err = tc.HandshakeContext(context.Background())
		if err == nil {
			// TLS 1.3 servers learn of a refused certificate only on the first read.
			_, err = tc.Read(make([]byte, 1))
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, client)
	cliErr = tc.Handshake()
	if cliErr == nil {
		// Let the server see the client's certificate, then learn its verdict.
		tc.Write([]byte{1})
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := tc.Read(make([]byte, 1)); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "EOF") {
			cliErr = err
		}
	}
	c.Close()
	srvErr = <-done
	if srvErr != nil && strings.Contains(srvErr.Error(), "EOF") {
		srvErr = nil
	}
	return srvErr, cliErr
}

func TestMutualTLS(t *testing.T) {
	ca, other := identitytest.NewCA(t), identitytest.NewCA(t)
	srvID, cliID := identity.New("b", "server"), identity.New("a", "client")
	good := func(c *identitytest.CA, id identity.ID) *identity.CertSource {
		return identity.NewCertSource(c.Issue(t, id))
	}
	expired := identity.NewCertSource(ca.IssueWith(t, cliID, identitytest.LeafOptions{
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	serverOnly := identity.NewCertSource(ca.IssueWith(t, cliID, identitytest.LeafOptions{
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))

	tests := []struct {
		name          string
		srvCerts      *identity.CertSource
		cliCerts      *identity.CertSource
		srvAuthz      identity.Authorizer
		cliAuthz      identity.Authorizer
		wantSrvRefuse bool
		wantCliRefuse bool
		wantAnyRefuse bool
	}{
		{name: "ok", srvCerts: good(ca, srvID), cliCerts: good(ca, cliID),
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID)},
		{name: "trust domain authorizer", srvCerts: good(ca, srvID), cliCerts: good(ca, cliID),
			srvAuthz: identity.ExpectTrustDomain("cluster.local"), cliAuthz: identity.ExpectID(srvID)},
		{name: "client from foreign CA", srvCerts: good(ca, srvID), cliCerts: good(other, cliID),
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID), wantSrvRefuse: true},
		{name: "server from foreign CA", srvCerts: good(other, srvID), cliCerts: good(ca, cliID),
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID), wantCliRefuse: true},
		{name: "client has wrong ID", srvCerts: good(ca, srvID), cliCerts: good(ca, identity.New("a", "intruder")),
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID), wantSrvRefuse: true},
		{name: "server has wrong ID", srvCerts: good(ca, identity.New("b", "impostor")), cliCerts: good(ca, cliID),
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID), wantCliRefuse: true},
		{name: "expired client", srvCerts: good(ca, srvID), cliCerts: expired,
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID), wantSrvRefuse: true},
		{name: "client cert without client auth usage", srvCerts: good(ca, srvID), cliCerts: serverOnly,
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID), wantSrvRefuse: true},
		{name: "client without certificate", srvCerts: good(ca, srvID), cliCerts: identity.NewCertSource(nil),
			srvAuthz: identity.ExpectID(cliID), cliAuthz: identity.ExpectID(srvID), wantAnyRefuse: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := identity.ServerConfig(identity.TLSOptions{Certs: tt.srvCerts, Roots: ca.Roots(), Authorize: tt.srvAuthz})
			if err != nil {
				t.Fatal(err)
			}
			cc, err := identity.ClientConfig(identity.TLSOptions{Certs: tt.cliCerts, Roots: ca.Roots(), Authorize: tt.cliAuthz})
			if err != nil {
				t.Fatal(err)
			}
			srvErr, cliErr := handshake(t, sc, cc)
			if tt.wantAnyRefuse {
				if srvErr == nil && cliErr == nil {
					t.Errorf("handshake succeeded")
				}
				return
			}
			if tt.wantCliRefuse {
				if cliErr == nil {
					t.Errorf("client accepted the server")
				}
				return
			}
			if tt.wantSrvRefuse {
				if srvErr == nil {
					t.Errorf("server accepted the client")
				}
				return
			}
			if srvErr != nil || cliErr != nil {
				t.Errorf("handshake failed: server %v, client %v", srvErr, cliErr)
			}
		})
	}
}

func TestTLS12Refused(t *testing.T) {
	ca := identitytest.NewCA(t)
	sc, _ := identity.ServerConfig(identity.TLSOptions{Certs: identity.NewCertSource(ca.Issue(t, identity.New("b", "s"))), Roots: ca.Roots(), Authorize: identity.ExpectTrustDomain("cluster.local")})
	cc := &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true, Certificates: []tls.Certificate{*ca.Issue(t, identity.New("a", "c"))}}
	srvErr, cliErr := handshake(t, sc, cc)
	if srvErr == nil && cliErr == nil {
		t.Fatal("TLS 1.2 handshake succeeded")
	}
}

func TestRotationWithoutRestart(t *testing.T) {
	ca := identitytest.NewCA(t)
	srvID, cliID := identity.New("b", "server"), identity.New("a", "client")
	srvCerts := identity.NewCertSource(ca.Issue(t, srvID))
	cliCerts := identity.NewCertSource(ca.Issue(t, cliID))
	var seen []identity.ID
	sc, _ := identity.ServerConfig(identity.TLSOptions{Certs: srvCerts, Roots: ca.Roots(), Authorize: func(p identity.ID) error {
		seen = append(seen, p)
		return nil
	}})
	cc, _ := identity.ClientConfig(identity.TLSOptions{Certs: cliCerts, Roots: ca.Roots(), Authorize: identity.ExpectID(srvID)})
	first := cliCerts.Load()
	if s, c := handshake(t, sc, cc); s != nil || c != nil {
		t.Fatal(s, c)
	}
	renewed := ca.Issue(t, cliID)
	cliCerts.Store(renewed)
	got, _ := cliCerts.GetClientCertificate(nil)
	if got != renewed || got == first {
		t.Fatal("GetClientCertificate did not return the renewed certificate")
	}
	if s, c := handshake(t, sc, cc); s != nil || c != nil {
		t.Fatal(s, c)
	}
	if len(seen) != 2 {
		t.Fatalf("authorizer ran %d times, want 2", len(seen))
	}

	// A CA rotation: the new root alone refuses old certificates until they are reissued.
	newCA := identitytest.NewCA(t)
	roots := identity.NewRoots(ca.Pool())
	sc2, _ := identity.ServerConfig(identity.TLSOptions{Certs: srvCerts, Roots: roots, Authorize: identity.ExpectID(cliID)})
	roots.Store(newCA.Pool())
	if s, _ := handshake(t, sc2, cc); s == nil {
		t.Fatal("server accepted a client of the retired CA")
	}
}

func TestEmptySource(t *testing.T) {
	s := identity.NewCertSource(nil)
	if _, err := s.GetCertificate(nil); !errors.Is(err, identity.ErrNoCertificate) {
		t.Fatalf("err = %v", err)
	}
	if _, err := identity.ServerConfig(identity.TLSOptions{}); err == nil {
		t.Fatal("ServerConfig accepted empty options")
	}
}

func TestParseCertificatesPEM(t *testing.T) {
	_, err := identity.ParseCertificatesPEM([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	if !errors.Is(err, identity.ErrNoPEMCertificate) {
		t.Errorf("only a key block: %v, want identity.ErrNoPEMCertificate", err)
	}
	if _, err := identity.ParseCertificatesPEM([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")); err == nil || errors.Is(err, identity.ErrNoPEMCertificate) {
		t.Errorf("a corrupt certificate: %v, want a parse error", err)
	}
}
