// Package kubetest runs a real kube-apiserver and etcd for the controller's
// integration tests: controller-runtime's envtest, pointed at the
// kube-apiserver that hack/cluster builds into its cache and at Debian's
// etcd, with Warren's CRDs installed.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/warrenmesh/warren/hack/cluster/localcluster"
)

// Etcd is Debian's etcd (package etcd-server, installed by hack/deps.sh).
const Etcd = "/usr/bin/etcd"

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
	env    *envtest.Environment
}

// Start builds or finds the binaries, starts etcd and kube-apiserver on
// loopback ports of envtest's choosing, in temporary folders, and installs
// the CRDs in crdDir. Stop removes all of it.
func Start(ctx context.Context, crdDir string) (*Env, error) {
	cfg := localcluster.DefaultConfig()
	if err := cfg.EnsureBinaries(ctx); err != nil {
		return nil, fmt.Errorf("kube binaries: %w", err)
	}
	apiserver := cfg.Bin("kube-apiserver")
	for _, p := range []string{apiserver, Etcd} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("binary: %w", err)
		}
	}
	te := &envtest.Environment{
		CRDDirectoryPaths:        []string{crdDir},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  20 * time.Second,
		CRDInstallOptions:        envtest.CRDInstallOptions{MaxTime: 30 * time.Second},
	}
	te.ControlPlane.GetAPIServer().Path = apiserver
	te.ControlPlane.Etcd = &envtest.Etcd{Path: Etcd}
	rc, err := te.Start()
	if err != nil {
		// Start may have started etcd before the apiserver failed.
		return nil, errors.Join(fmt.Errorf("start envtest: %w", err), te.Stop())
	}
	return &Env{Config: rc, env: te}, nil
}

// Stop stops the processes and removes their temporary folders.
func (e *Env) Stop() error { return e.env.Stop() }

// GVR returns the resource of a warren.dev kind.
func GVR(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "warren.dev", Version: "v1alpha1", Resource: resource}
}
