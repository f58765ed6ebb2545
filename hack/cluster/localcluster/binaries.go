package localcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// kubeStaging lists the k8s.io staging modules that k8s.io/kubernetes's go.mod replaces with
// local paths; a module that depends on k8s.io/kubernetes must replace them with the published
// modules of the matching version.
var kubeStaging = []string{
	"api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
	"cloud-provider", "cluster-bootstrap", "code-generator", "component-base", "component-helpers",
	"controller-manager", "cri-api", "cri-client", "cri-streaming", "csi-translation-lib",
	"dynamic-resource-allocation", "endpointslice", "externaljwt", "kms", "kube-aggregator",
	"kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl", "kubelet", "metrics",
	"mount-utils", "pod-security-admission", "sample-apiserver", "sample-cli-plugin",
	"sample-controller", "streaming",
}

var kubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// kubeGoMod is the go.mod of the small module that builds Kubernetes's commands.
func kubeGoMod() string {
	var b strings.Builder
	fmt.Fprintf(&b, "module warren.local/k8sbuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", KubernetesVersion)
	staging := strings.Replace(KubernetesVersion, "v1.", "v0.", 1)
	for _, m := range kubeStaging {
		fmt.Fprintf(&b, "\tk8s.io/%s => k8s.io/%s %s\n", m, m, staging)
	}
	b.WriteString(")\n")
	return b.String()
}

func kubeLdflags() string {
	v := KubernetesVersion
	minor := strings.Split(strings.TrimPrefix(v, "v"), ".")[1]
	var fl []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		fl = append(fl, "-X "+pkg+".gitVersion="+v, "-X "+pkg+".gitMajor=1", "-X "+pkg+".gitMinor="+minor, "-X "+pkg+".gitTreeState=clean")
	}
	return "-s -w " + strings.Join(fl, " ")
}

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
			name: "kubernetes " + KubernetesVersion, bins: kubeBinaries, estimate: "about 7-10 min on 2 cores from a cold cache",
			build: func(ctx context.Context, c *Config, log io.Writer) error {
				dir := filepath.Join(c.srcDir(), "k8s")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				var imports strings.Builder
				for _, b := range kubeBinaries {
					fmt.Fprintf(&imports, "\t_ \"k8s.io/kubernetes/cmd/%s\"\n", b)
				}
				tools := "//go:build tools\n\npackage k8sbuild\n\nimport (\n" + imports.String() + ")\n"
				if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(kubeGoMod()), 0o644); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
					return err
				}
				if err := goCmd(ctx, dir, log, nil, "mod", "tidy"); err != nil {
					return err
				}
				args := []string{"build", "-trimpath", "-ldflags", kubeLdflags(), "-o", c.binDir() + "/"}
				for _, b := range kubeBinaries {
					args = append(args, "k8s.io/kubernetes/cmd/"+b)
				}
				return goCmd(ctx, dir, log, []string{"CGO_ENABLED=0"}, args...)
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
	return comp.name + "\n" + strings.Join(comp.bins, " ") + "\n" + kubeLdflags() + "\n"
}

// goCmd runs the go command in dir with GOFLAGS cleared of the caller's module settings.
func goCmd(ctx context.Context, dir string, log io.Writer, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = log, log
	return cmd.Run()
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
	start := time.Now()
	fmt.Fprintf(c.Log, "==> %s\n", what)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(c.Log, "    ... %s: %s elapsed\n", what, time.Since(start).Round(time.Second))
			}
		}
	}()
	err := f(ctx)
	close(done)
	if err == nil {
		fmt.Fprintf(c.Log, "    done in %s\n", time.Since(start).Round(100*time.Millisecond))
	}
	return err
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
