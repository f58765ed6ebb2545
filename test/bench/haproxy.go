package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/warrenmesh/warren/internal/devpki"
)

// Ports of the TLS hop between the two HAProxies.
const (
	haproxyTLSIperf = 15201
	haproxyTLSHTTP  = 18080
)

// haproxyPair is the established proxy Warren is measured against: one HAProxy per node, the
// client's carrying plain TCP from the client pod into TLS 1.3 to the server node's, which
// verifies the client certificate and forwards plain TCP to the server pod. That is the shape of
// a mesh's two tunnels, with a proxy that has had two decades of tuning.
type haproxyPair struct {
	procs []*Proc
}

func (h *haproxyPair) Name() string { return "haproxy-pair" }
func (h *haproxyPair) Description() string {
	return "client → HAProxy (node1) → TLS 1.3, both certificates verified → HAProxy (node2) → server; TCP mode"
}
func (h *haproxyPair) Proxies() []*Proc { return h.procs }

// haproxyBundle issues a certificate for dnsName and returns it followed by
// its key, the single file HAProxy's `crt` takes.
func haproxyBundle(ca *devpki.KeyPair, dnsName string, usage x509.ExtKeyUsage) ([]byte, error) {
	l, err := ca.Issue(devpki.Spec{CommonName: dnsName, Organization: []string{"warren bench"}, DNSNames: []string{dnsName}, ExtKeyUsage: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return nil, err
	}
	key, err := l.KeyPEM()
	if err != nil {
		return nil, err
	}
	return append(l.CertPEM(), key...), nil
}

func (h *haproxyPair) Setup(ctx context.Context, env *Env) (Target, error) {
	dir := filepath.Join(env.Dir, "haproxy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Target{}, err
	}
	ca, err := devpki.NewCA(devpki.Spec{CommonName: "wbench-ca", Organization: []string{"warren bench"}})
	if err != nil {
		return Target{}, err
	}
	server, err := haproxyBundle(ca, "node2.wbench", x509.ExtKeyUsageServerAuth)
	if err != nil {
		return Target{}, err
	}
	client, err := haproxyBundle(ca, "node1.wbench", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return Target{}, err
	}
	files := map[string][]byte{
		"ca.pem":    ca.CertPEM(),
		"node2.pem": server,
		"node1.pem": client,
		"node1.cfg": []byte(haproxyNode1(dir)),
		"node2.cfg": []byte(haproxyNode2(dir)),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return Target{}, err
		}
	}
	for _, n := range []struct {
		ns, name string
		ports    []uint16
	}{
		{env.Topo.Node2, "haproxy-node2", []uint16{haproxyTLSIperf, haproxyTLSHTTP}},
		{env.Topo.Node1, "haproxy-node1", []uint16{iperfPort, httpPort}},
	} {
		// -db keeps it in the foreground, a single process, so the pid we hold is the proxy.
		p, err := env.Topo.Start(n.ns, n.name, "haproxy", "-db", "-f", filepath.Join(dir, n.name[len("haproxy-"):]+".cfg"))
		if err != nil {
			return Target{}, err
		}
		h.procs = append(h.procs, p)
		for _, port := range n.ports {
			if err := p.WaitListening(ctx, port); err != nil {
				return Target{}, err
			}
		}
	}
	return Target{Host: clientGW, IperfPort: iperfPort, HTTPPort: httpPort}, nil
}

func (h *haproxyPair) Teardown() error {
	var errs []error
	for _, p := range h.procs {
		p.Stop()
		select {
		case <-p.done:
		default:
			errs = append(errs, fmt.Errorf("%s (pid %d) did not stop", p.Name, p.PID))
		}
	}
	h.procs = nil
	return errors.Join(errs...)
}

// haproxyGlobal is shared by both ends. TLS 1.3 only, with the AES-128-GCM suite that Go (and so
// Warren) negotiates on CPUs with AES instructions, so that both sides of the comparison do the
// same cryptography. Threads: HAProxy's default, one per CPU. No maxconn: HAProxy derives it
// from the file-descriptor limit, and a fixed one above that limit makes it refuse to start.
const haproxyGlobal = `global
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256

defaults
    mode tcp
    timeout connect 5s
    timeout client 2m
    timeout server 2m
`

func haproxyNode1(dir string) string {
	tls := fmt.Sprintf("ssl verify required ca-file %s crt %s sni str(node2.wbench) verifyhost node2.wbench",
		filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node1.pem"))
	return haproxyGlobal + fmt.Sprintf(`
listen iperf
    bind %[1]s:%[2]d
    server node2 %[3]s:%[4]d %[7]s

listen http
    bind %[1]s:%[5]d
    server node2 %[3]s:%[6]d %[7]s
`, clientGW, iperfPort, node2Link, haproxyTLSIperf, httpPort, haproxyTLSHTTP, tls)
}

func haproxyNode2(dir string) string {
	tls := fmt.Sprintf("ssl crt %s ca-file %s verify required",
		filepath.Join(dir, "node2.pem"), filepath.Join(dir, "ca.pem"))
	return haproxyGlobal + fmt.Sprintf(`
listen iperf
    bind %[1]s:%[2]d %[7]s
    server pod %[3]s:%[4]d

listen http
    bind %[1]s:%[5]d %[7]s
    server pod %[3]s:%[6]d
`, node2Link, haproxyTLSIperf, serverIP, iperfPort, haproxyTLSHTTP, httpPort, tls)
}
