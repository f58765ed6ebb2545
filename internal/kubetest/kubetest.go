// Package kubetest runs a real kube-apiserver and etcd for integration tests
// (the controller's, the node agent's): controller-runtime's envtest,
// pointed at the kube-apiserver of Warren's binary cache (internal/kubebin,
// built on first use, shared with hack/cluster) and at Debian's etcd, with
// the CRDs of the given folders installed. It imports nothing from hack/.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/warrenmesh/warren/internal/kubebin"
)

// Etcd is Debian's etcd (package etcd-server, installed by hack/deps.sh).
const Etcd = "/usr/bin/etcd"

// BuildTimeout bounds Start's wait for the binaries: a build from a cold
// cache takes kubebin.Estimate, longer on a loaded machine.
const BuildTimeout = 20 * time.Minute

// SkipReason says why the integration tests cannot run here, or "" when
// they can: they need root (hack/deps.sh and the binary cache are root's)
// and are too slow for -short.
func SkipReason() string {
	switch {
	case testing.Short():
		return "integration test against a real kube-apiserver: skipped under -short"
	case os.Geteuid() != 0:
		return "integration test against a real kube-apiserver: needs root (the binary cache and hack/deps.sh are root's)"
	}
	return ""
}

// Env is a running apiserver and etcd.
type Env struct {
	Config *rest.Config
	// Kubeconfig is a kubeconfig for Config, for programs that read one.
	Kubeconfig []byte
	env        *envtest.Environment
	wrappers   string
	// release lets the thread the processes were forked from go.
	release chan struct{}
}

// Start builds or finds the binaries, starts etcd and kube-apiserver on
// loopback ports of envtest's choosing, in temporary folders, and installs
// the CRDs in crdDirs. Stop removes all of it.
func Start(ctx context.Context, crdDirs ...string) (*Env, error) {
	cache := kubebin.DefaultCacheDir()
	if err := kubebin.Ensure(ctx, cache, os.Stderr); err != nil {
		return nil, fmt.Errorf("kube binaries: %w", err)
	}
	apiserver := kubebin.Path(cache, "kube-apiserver")
	if _, err := os.Stat(Etcd); err != nil {
		return nil, fmt.Errorf("etcd (hack/deps.sh installs it): %w", err)
	}
	te := &envtest.Environment{
		CRDDirectoryPaths:        crdDirs,
		ErrorIfCRDPathMissing:    len(crdDirs) > 0,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  20 * time.Second,
		CRDInstallOptions:        envtest.CRDInstallOptions{MaxTime: 30 * time.Second},
	}
	// envtest stops its processes in Stop, which a test binary killed by a
	// timeout or a panic never reaches; a parent-death signal makes them
	// go with it.
	// Everything lives in one folder, marked with our pid, so that the
	// folders of a killed test binary can be swept by the next run.
	sweep()
	wrappers, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	apiserverW, err1 := wrapper(wrappers, "kube-apiserver", apiserver)
	etcdW, err2 := wrapper(wrappers, "etcd", Etcd)
	err3 := os.WriteFile(filepath.Join(wrappers, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	err4 := os.Mkdir(filepath.Join(wrappers, "apiserver-certs"), 0o700)
	err5 := os.Mkdir(filepath.Join(wrappers, "etcd-data"), 0o700)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, errors.Join(err, os.RemoveAll(wrappers))
	}
	te.ControlPlane.GetAPIServer().Path = apiserverW
	te.ControlPlane.GetAPIServer().CertDir = filepath.Join(wrappers, "apiserver-certs")
	te.ControlPlane.Etcd = &envtest.Etcd{Path: etcdW, DataDir: filepath.Join(wrappers, "etcd-data")}
	// The parent-death signal belongs to the thread that forks, not the
	// process: started from any thread, the apiserver would be killed when
	// the Go runtime ends that thread (it does so for a goroutine that
	// exits locked to its thread, as netns code does). So the processes
	// are forked from a thread kept for them until Stop.
	started, release := make(chan error, 1), make(chan struct{})
	var rc *rest.Config
	go func() {
		runtime.LockOSThread()
		var err error
		rc, err = te.Start()
		started <- err
		<-release
	}()
	if err := <-started; err != nil {
		close(release)
		// Start may have started etcd before the apiserver failed.
		return nil, errors.Join(fmt.Errorf("start envtest: %w", err), te.Stop(), os.RemoveAll(wrappers))
	}
	return &Env{Config: rc, Kubeconfig: te.KubeConfig, env: te, wrappers: wrappers, release: release}, nil
}

// ForTest starts an Env for t alone (skipped, with SkipReason, where it
// cannot run) and stops it when t ends. It returns a client and the path of
// a kubeconfig in t's temporary folder.
func ForTest(t testing.TB, crdDirs ...string) (*Env, kubernetes.Interface, string) {
	t.Helper()
	if msg := SkipReason(); msg != "" {
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	e, err := Start(ctx, crdDirs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stop apiserver and etcd: %v", err)
		}
	})
	client, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, e.Kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return e, client, kubeconfig
}

const dirPrefix = "warren-kubetest-"

// sweep removes the folders of earlier runs whose test binary is gone.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// wrapper writes a script that runs bin with SIGKILL as its parent-death
// signal (setpriv keeps it across exec).
func wrapper(dir, name, bin string) (string, error) {
	p := filepath.Join(dir, name)
	script := "#!/bin/sh\nexec setpriv --pdeathsig KILL -- " + bin + " \"$@\"\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("wrapper %s: %w", name, err)
	}
	return p, nil
}

// Stop stops the processes and removes their temporary folders.
func (e *Env) Stop() error {
	err := errors.Join(e.env.Stop(), os.RemoveAll(e.wrappers))
	close(e.release)
	return err
}

// GVR returns the resource of a warren.dev kind.
func GVR(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "warren.dev", Version: "v1alpha1", Resource: resource}
}
