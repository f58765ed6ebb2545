package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const cpCgroup = cgroupParent + "/control-plane"

func (c *Config) controlPlaneDaemons() []daemon {
	pki := func(f string) string { return filepath.Join(c.pkiDir(), f) }
	cpns := netnsPath(cpNetns)
	api := []string{
		c.bin("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--advertise-address=" + cpIP,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--tls-cert-file=" + pki("apiserver.crt"),
		"--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-key-file=" + pki("sa.pub"),
		"--service-account-signing-key-file=" + pki("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--requestheader-client-ca-file=" + pki("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file=" + pki("front-proxy-client.crt"),
		"--proxy-client-key-file=" + pki("front-proxy-client.key"),
		"--enable-aggregator-routing=true",
		"--profiling=false",
	}
	cm := []string{
		c.bin("kube-controller-manager"),
		"--kubeconfig=" + pki("controller-manager.kubeconfig"),
		"--authentication-kubeconfig=" + pki("controller-manager.kubeconfig"),
		"--authorization-kubeconfig=" + pki("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--cluster-signing-cert-file=" + pki("ca.crt"),
		"--cluster-signing-key-file=" + pki("ca.key"),
		"--root-ca-file=" + pki("ca.crt"),
		"--service-account-private-key-file=" + pki("sa.key"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cluster-cidr=" + clusterCIDR,
		"--allocate-node-cidrs=false",
		"--requestheader-client-ca-file=" + pki("front-proxy-ca.crt"),
	}
	sched := []string{
		c.bin("kube-scheduler"),
		"--kubeconfig=" + pki("scheduler.kubeconfig"),
		"--authentication-kubeconfig=" + pki("scheduler.kubeconfig"),
		"--authorization-kubeconfig=" + pki("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
	}
	etcdData := filepath.Join(c.stateDir(), "etcd")
	sock := filepath.Join(c.runDir(), "apiserver.sock")
	return []daemon{
		{Name: "etcd", Cgroup: cpCgroup, Netns: cpns, Argv: []string{"etcd",
			"--name=warren", "--data-dir=" + etcdData,
			"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=warren=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
			"--quota-backend-bytes=2147483648"}},
		{Name: "kube-apiserver", Cgroup: cpCgroup, Netns: cpns, Argv: api},
		{Name: "kube-controller-manager", Cgroup: cpCgroup, Netns: cpns, Argv: cm},
		{Name: "kube-scheduler", Cgroup: cpCgroup, Netns: cpns, Argv: sched},
		// The host reaches the apiserver through two relays joined by a Unix socket, which
		// crosses network namespaces: one inside the control plane's netns, one on loopback.
		{Name: "relay-cp", Cgroup: cpCgroup, Netns: cpns, Argv: []string{"socat",
			"UNIX-LISTEN:" + sock + ",fork,unlink-early,mode=600", fmt.Sprintf("TCP:%s:%d", cpIP, apiPort)}},
		{Name: "relay-host", Cgroup: cpCgroup, Argv: []string{"socat",
			"TCP-LISTEN:" + strings.Split(HostAPIAddr, ":")[1] + ",bind=" + strings.Split(HostAPIAddr, ":")[0] + ",fork,reuseaddr",
			"UNIX-CONNECT:" + sock}},
	}
}

// startControlPlane starts etcd, then the apiserver, waits for it to be ready, then the rest.
func (c *Config) startControlPlane(ctx context.Context, h *hierarchies) error {
	if err := h.ensure(cpCgroup); err != nil {
		return err
	}
	ds := c.controlPlaneDaemons()
	for _, d := range ds[:2] {
		if err := c.start(d, h); err != nil {
			return stepErr("start "+d.Name, c.logFile(d.Name), err)
		}
	}
	for _, d := range ds[4:] {
		if err := c.start(d, h); err != nil {
			return stepErr("start "+d.Name, c.logFile(d.Name), err)
		}
	}
	if err := c.waitAPIServer(ctx, 90*time.Second); err != nil {
		return stepErr("wait for kube-apiserver", c.logFile("kube-apiserver"), err)
	}
	for _, d := range ds[2:4] {
		if err := c.start(d, h); err != nil {
			return stepErr("start "+d.Name, c.logFile(d.Name), err)
		}
	}
	return nil
}

// adminHTTP returns an HTTP client that authenticates as the cluster admin.
func (c *Config) adminHTTP() (*http.Client, error) {
	ca, err := os.ReadFile(filepath.Join(c.pkiDir(), "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.pkiDir(), "admin.crt"), filepath.Join(c.pkiDir(), "admin.key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

// apiReady asks the apiserver's /readyz through the host relay.
func (c *Config) apiReady() error {
	hc, err := c.adminHTTP()
	if err != nil {
		return err
	}
	resp, err := hc.Get("https://" + HostAPIAddr + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}

func (c *Config) waitAPIServer(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = c.apiReady(); err == nil {
			return nil
		}
		if !c.alive("kube-apiserver") {
			return fmt.Errorf("kube-apiserver exited")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %s: %w", timeout, err)
}
