package localcluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PrometheusHostAddr is where the host reaches the cluster's Prometheus (a relay into the
// control plane's netns, like the apiserver's).
const PrometheusHostAddr = "127.0.0.1:19090"

const promPort = 9090

// prometheusConfig scrapes Warren's node ports on every node: the ztunnel's (15020) and the
// agent's (15024), both in the node's netns (host network). Debian builds Prometheus without
// Kubernetes service discovery, so the targets are the nodes' fixed addresses.
func (c *Config) prometheusConfig() string {
	var zt, agent []string
	for _, n := range c.nodes() {
		zt = append(zt, fmt.Sprintf("{targets: ['%s:15020'], labels: {node: %s}}", n.IP(), n.Name()))
		agent = append(agent, fmt.Sprintf("{targets: ['%s:15024'], labels: {node: %s}}", n.IP(), n.Name()))
	}
	return fmt.Sprintf(`# Written by hack/cluster: the local cluster's Prometheus.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
- job_name: ztunnel
  static_configs: [%s]
- job_name: warren-agent
  static_configs: [%s]
`, strings.Join(zt, ", "), strings.Join(agent, ", "))
}

// StartPrometheus runs Debian's Prometheus (hack/deps.sh installs it) in the control plane's
// netns, scraping every node's ztunnel and agent, with a relay so the host reaches it at
// PrometheusHostAddr. It is part of the cluster: `down` stops it. Starting it again while it
// runs does nothing.
func (c *Config) StartPrometheus(ctx context.Context) error {
	n, ok := c.Running()
	if !ok {
		return fmt.Errorf("no running cluster: run `up` first")
	}
	c.Nodes = n
	if c.alive("prometheus") && c.alive("prometheus-relay-host") {
		return nil
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return fmt.Errorf("prometheus is not installed (hack/deps.sh installs Debian's): %w", err)
	}
	dir := filepath.Join(c.stateDir(), "prometheus")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(c.prometheusConfig()), 0o644); err != nil {
		return err
	}
	h, err := detectHierarchies()
	if err != nil {
		return err
	}
	sock := filepath.Join(c.runDir(), "prometheus.sock")
	cpns := netnsPath(cpNetns)
	for _, d := range []daemon{
		{Name: "prometheus", Cgroup: cpCgroup, Netns: cpns, Argv: []string{bin,
			"--config.file=" + cfgFile, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--storage.tsdb.retention.time=1d", fmt.Sprintf("--web.listen-address=%s:%d", cpIP, promPort)}},
		{Name: "prometheus-relay-cp", Cgroup: cpCgroup, Netns: cpns, Argv: []string{"socat",
			"UNIX-LISTEN:" + sock + ",fork,unlink-early,mode=600", fmt.Sprintf("TCP:%s:%d", cpIP, promPort)}},
		{Name: "prometheus-relay-host", Cgroup: cpCgroup, Argv: []string{"socat",
			"TCP-LISTEN:" + strings.Split(PrometheusHostAddr, ":")[1] + ",bind=" + strings.Split(PrometheusHostAddr, ":")[0] + ",fork,reuseaddr",
			"UNIX-CONNECT:" + sock}},
	} {
		if c.alive(d.Name) {
			continue
		}
		if err := c.start(d, h); err != nil {
			return stepErr("start "+d.Name, c.logFile(d.Name), err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + PrometheusHostAddr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return stepErr("wait for prometheus", c.logFile("prometheus"), fmt.Errorf("not ready after 60 s: %v", err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
