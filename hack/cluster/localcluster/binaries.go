package localcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/warrenmesh/warren/internal/kubebin"
)

// component is a set of binaries built by one Go command, with a stamp that records what
// built them, so a changed version rebuilds and an unchanged one is reused.
type component struct {
	name     string
	bins     []string
	estimate string
	build    func(ctx context.Context, c *Config, log io.Writer) error
}

func (c *Config) components() []component {
	return []component{
		{
			name: kubebin.Name, bins: kubebin.Binaries, estimate: kubebin.Estimate,
			build: func(ctx context.Context, c *Config, log io.Writer) error {
				return kubebin.Build(ctx, c.CacheDir, log)
			},
		},
		{
			name: "containerd " + ContainerdVersion, bins: []string{"containerd", "ctr", "containerd-shim-runc-v2"}, estimate: "about 1.5 min",
			build: func(ctx context.Context, c *Config, log io.Writer) error {
				m := "github.com/containerd/containerd/v2/cmd/"
				return goCmd(ctx, c.CacheDir, log, []string{"GOBIN=" + c.binDir(), "CGO_ENABLED=0"},
					"install", "-trimpath", "-tags", "no_btrfs no_devmapper no_zfs no_aufs",
					"-ldflags", "-s -w -X github.com/containerd/containerd/v2/version.Version="+ContainerdVersion,
					m+"containerd@"+ContainerdVersion, m+"ctr@"+ContainerdVersion, m+"containerd-shim-runc-v2@"+ContainerdVersion)
			},
		},
		{
			name: "coredns " + CoreDNSVersion, bins: []string{"coredns"}, estimate: "about 2 min",
			build: func(ctx context.Context, c *Config, log io.Writer) error {
				return goCmd(ctx, c.CacheDir, log, []string{"GOBIN=" + c.binDir(), "CGO_ENABLED=0"},
					"install", "-trimpath", "-ldflags", "-s -w", "github.com/coredns/coredns@"+CoreDNSVersion)
			},
		},
	}
}

func (comp component) stamp() string {
	// kubebin.Stamp for Kubernetes: the apiserver test harness reads the same cache.
	return comp.name + "\n" + strings.Join(comp.bins, " ") + "\n" + kubebin.Ldflags() + "\n"
}

func goCmd(ctx context.Context, dir string, log io.Writer, env []string, args ...string) error {
	return kubebin.GoCmd(ctx, dir, log, env, args...)
}

// ensureBinaries builds every component whose binaries or stamp are missing or stale.
func (c *Config) ensureBinaries(ctx context.Context) error {
	if err := os.MkdirAll(c.binDir(), 0o755); err != nil {
		return err
	}
	for _, comp := range c.components() {
		stampFile := filepath.Join(c.binDir(), ".stamp-"+strings.Fields(comp.name)[0])
		if b, err := os.ReadFile(stampFile); err == nil && string(b) == comp.stamp() && c.haveAll(comp.bins) {
			continue
		}
		logPath := filepath.Join(c.CacheDir, "build-"+strings.Fields(comp.name)[0]+".log")
		logf, err := os.Create(logPath)
		if err != nil {
			return err
		}
		err = c.progress(ctx, "building "+comp.name+" ("+comp.estimate+")", func(ctx context.Context) error {
			return comp.build(ctx, c, logf)
		})
		logf.Close()
		if err != nil {
			return stepErr("build "+comp.name, logPath, err)
		}
		if !c.haveAll(comp.bins) {
			return stepErr("build "+comp.name, logPath, fmt.Errorf("binaries missing after build"))
		}
		if err := os.WriteFile(stampFile, []byte(comp.stamp()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) haveAll(bins []string) bool {
	for _, b := range bins {
		if _, err := os.Stat(c.bin(b)); err != nil {
			return false
		}
	}
	return true
}

// progress runs f while printing what is being done and the elapsed time every 20 s.
func (c *Config) progress(ctx context.Context, what string, f func(context.Context) error) error {
	return kubebin.Progress(ctx, c.Log, what, f)
}

// EnsureBinaries builds Kubernetes, containerd and CoreDNS into the cache when they are missing
// or stale. Integration tests use it to get a real kube-apiserver (and Debian's etcd) without
// bringing a cluster up.
func (c *Config) EnsureBinaries(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := ensureDeps(ctx, c.Log); err != nil {
		return stepErr("install Debian packages", "", err)
	}
	return c.ensureBinaries(ctx)
}

// Bin returns the path of a cached binary ("kube-apiserver", "kubectl", "ctr", ...).
func (c *Config) Bin(name string) string { return c.bin(name) }
