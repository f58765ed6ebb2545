package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/bpf/redirect/pins"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/netns/netnstest"
	"github.com/warrenmesh/warren/internal/zds"
	"github.com/warrenmesh/warren/nodeagent"
	"github.com/warrenmesh/warren/ztunnel/ztunneltest"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestZDSMode runs the command with a configuration that lists no pods: it
// takes its pod from the agent's zds socket (--zds-socket), opens the pod's
// listeners in its netns and becomes ready.
func TestZDSMode(t *testing.T) {
	netnstest.RequireKernel(t, "mounts a bpffs and creates a network namespace")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	bpffs := filepath.Join(dir, "bpffs")
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount %s: %v", bpffs, err)
		}
	})
	k, err := nodeagent.Open(ctx, nodeagent.Options{Node: "cmdtest", BPFFS: bpffs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	nsName := fmt.Sprintf("wzt-cmd-%d", os.Getpid())
	ns, err := netns.Add(nsName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.Delete(nsName); err != nil {
			t.Error(err)
		}
	})
	sock := filepath.Join(dir, "ztunnel.sock")
	srv, err := zds.Listen(sock, zds.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("zds Serve: %v", err)
		}
	}()
	pod := zds.Pod{UID: "pod-uid", Namespace: "demo", Name: "pod", ServiceAccount: "app", IPs: []netip.Addr{netip.MustParseAddr("10.79.0.2")}}
	if err := srv.AddPod(ctx, pod, filepath.Join(netns.RunDir, nsName)); err != nil {
		t.Fatal(err)
	}

	ca, err := ztunneltest.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.WriteSVID(identity.ID{TrustDomain: identity.DefaultTrustDomain, Namespace: pod.Namespace, ServiceAccount: pod.ServiceAccount})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "static.yaml")
	cfg := fmt.Sprintf("node: cmdtest\npinDir: %s\ncaBundle: %s\ncerts:\n  %s/%s: {cert: %s, key: %s}\n",
		filepath.Join(bpffs, "warren", "cmdtest"), ca.Bundle, pod.Namespace, pod.ServiceAccount, cert, key)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	readyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	done := make(chan error, 1)
	go func() {
		done <- runArgs(ctx, []string{"--config", cfgFile, "--zds-socket", sock, "--handover-wait", "0",
			"--admin-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--ready-addr", readyAddr})
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("ztunnel exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("ztunnel not ready")
		}
		resp, err := http.Get("http://" + readyAddr + "/healthz/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
	}
	// Ready comes with the snapshot's end; the agent sees the ack just after.
	for deadline := time.Now().Add(2 * time.Second); !srv.Connected(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent never got the snapshot's ack")
		}
	}
	// The pod's outbound listener is open inside its netns, at the port
	// the ztunnel wrote for it in tunnel_ports.
	ports, err := pins.OpenTunnelPorts(filepath.Join(bpffs, "warren", "cmdtest"))
	if err != nil {
		t.Fatal(err)
	}
	defer ports.Close()
	cookie, err := netns.Cookie(ns)
	if err != nil {
		t.Fatal(err)
	}
	port4, _, err := pins.OutboundPorts(ports, cookie)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port4), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("the pod's outbound listener: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ztunnel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("ztunnel did not stop")
	}
}
