// Package kubebin builds Kubernetes's commands (kube-apiserver, kubelet,
// kubectl, ...) from the Go module proxy into Warren's binary cache and finds
// them there. The local cluster (hack/cluster) and the apiserver test harness
// (internal/kubetest) share the cache through it: the same folder, the same
// stamp, so whichever needs the binaries first builds them once for both.
package kubebin

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

// Version is the Kubernetes release built.
const Version = "v1.37.2"

// Binaries are the commands built.
var Binaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// staging lists the k8s.io staging modules that k8s.io/kubernetes's go.mod replaces with
// local paths; a module that depends on k8s.io/kubernetes must replace them with the published
// modules of the matching version.
var staging = []string{
	"api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
	"cloud-provider", "cluster-bootstrap", "code-generator", "component-base", "component-helpers",
	"controller-manager", "cri-api", "cri-client", "cri-streaming", "csi-translation-lib",
	"dynamic-resource-allocation", "endpointslice", "externaljwt", "kms", "kube-aggregator",
	"kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl", "kubelet", "metrics",
	"mount-utils", "pod-security-admission", "sample-apiserver", "sample-cli-plugin",
	"sample-controller", "streaming",
}

// Estimate is how long a build from a cold cache takes, for progress lines.
const Estimate = "about 7-10 min on 2 cores from a cold cache"

// DefaultCacheDir is $WARREN_CACHE, or warren in the user's cache folder
// (~/.cache/warren).
func DefaultCacheDir() string {
	if d := os.Getenv("WARREN_CACHE"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = "/root/.cache"
	}
	return filepath.Join(base, "warren")
}

// BinDir is where the cache under cacheDir keeps binaries.
func BinDir(cacheDir string) string { return filepath.Join(cacheDir, "bin") }

// Path is the cached binary name under cacheDir.
func Path(cacheDir, name string) string { return filepath.Join(BinDir(cacheDir), name) }

// GoMod is the go.mod of the small module that builds Kubernetes's commands.
func GoMod() string {
	var b strings.Builder
	fmt.Fprintf(&b, "module warren.local/k8sbuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", Version)
	stagingVersion := strings.Replace(Version, "v1.", "v0.", 1)
	for _, m := range staging {
		fmt.Fprintf(&b, "\tk8s.io/%s => k8s.io/%s %s\n", m, m, stagingVersion)
	}
	b.WriteString(")\n")
	return b.String()
}

// Ldflags stamp the version into the binaries, as Kubernetes's own build does.
func Ldflags() string {
	minor := strings.Split(strings.TrimPrefix(Version, "v"), ".")[1]
	var fl []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		fl = append(fl, "-X "+pkg+".gitVersion="+Version, "-X "+pkg+".gitMajor=1", "-X "+pkg+".gitMinor="+minor, "-X "+pkg+".gitTreeState=clean")
	}
	return "-s -w " + strings.Join(fl, " ")
}

// Name names the build in stamps and progress lines.
const Name = "kubernetes " + Version

// Stamp records what built the binaries: a cache whose stamp differs is
// rebuilt.
func Stamp() string { return Name + "\n" + strings.Join(Binaries, " ") + "\n" + Ldflags() + "\n" }

// StampFile is the stamp's path under cacheDir.
func StampFile(cacheDir string) string { return filepath.Join(BinDir(cacheDir), ".stamp-kubernetes") }

// LogFile is where the build's output goes under cacheDir.
func LogFile(cacheDir string) string { return filepath.Join(cacheDir, "build-kubernetes.log") }

// Fresh reports whether the cache under cacheDir holds every binary, built
// by this Version.
func Fresh(cacheDir string) bool {
	if b, err := os.ReadFile(StampFile(cacheDir)); err != nil || string(b) != Stamp() {
		return false
	}
	for _, b := range Binaries {
		if _, err := os.Stat(Path(cacheDir, b)); err != nil {
			return false
		}
	}
	return true
}

// Build builds the binaries into the cache under cacheDir, writing the go
// command's output to log. It does not write the stamp (Ensure does).
func Build(ctx context.Context, cacheDir string, log io.Writer) error {
	dir := filepath.Join(cacheDir, "src", "k8s")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var imports strings.Builder
	for _, b := range Binaries {
		fmt.Fprintf(&imports, "\t_ \"k8s.io/kubernetes/cmd/%s\"\n", b)
	}
	tools := "//go:build tools\n\npackage k8sbuild\n\nimport (\n" + imports.String() + ")\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(GoMod()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		return err
	}
	if err := GoCmd(ctx, dir, log, nil, "mod", "tidy"); err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-ldflags", Ldflags(), "-o", BinDir(cacheDir) + "/"}
	for _, b := range Binaries {
		args = append(args, "k8s.io/kubernetes/cmd/"+b)
	}
	return GoCmd(ctx, dir, log, []string{"CGO_ENABLED=0"}, args...)
}

// Ensure builds the binaries under cacheDir unless they are Fresh, printing
// progress to progress; the go command's output goes to LogFile.
func Ensure(ctx context.Context, cacheDir string, progress io.Writer) error {
	if Fresh(cacheDir) {
		return nil
	}
	if err := os.MkdirAll(BinDir(cacheDir), 0o755); err != nil {
		return err
	}
	logf, err := os.Create(LogFile(cacheDir))
	if err != nil {
		return err
	}
	err = Progress(ctx, progress, "building "+Name+" ("+Estimate+")", func(ctx context.Context) error {
		return Build(ctx, cacheDir, logf)
	})
	logf.Close()
	if err == nil && !Fresh(cacheDir) {
		err = os.WriteFile(StampFile(cacheDir), []byte(Stamp()), 0o644)
	}
	if err == nil && !Fresh(cacheDir) {
		err = fmt.Errorf("binaries missing after the build")
	}
	if err != nil {
		return fmt.Errorf("build %s (see %s): %w", Name, LogFile(cacheDir), err)
	}
	return nil
}

// GoCmd runs the go command in dir with GOFLAGS cleared of the caller's module settings.
func GoCmd(ctx context.Context, dir string, log io.Writer, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = log, log
	return cmd.Run()
}

// Progress runs f while printing to log what is being done and the elapsed
// time every 20 s.
func Progress(ctx context.Context, log io.Writer, what string, f func(context.Context) error) error {
	start := time.Now()
	fmt.Fprintf(log, "==> %s\n", what)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(log, "    ... %s: %s elapsed\n", what, time.Since(start).Round(time.Second))
			}
		}
	}()
	err := f(ctx)
	close(done)
	if err == nil {
		fmt.Fprintf(log, "    done in %s\n", time.Since(start).Round(100*time.Millisecond))
	}
	return err
}
