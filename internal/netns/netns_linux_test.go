package netns

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
)

func init() { runtime.LockOSThread() }

func TestAddDoCookie(t *testing.T) {
	if testing.Short() {
		t.Skip("creates network namespaces; skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("creates network namespaces; needs root")
	}
	name := fmt.Sprintf("wtest-netns-%d", os.Getpid())
	ns, err := Add(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := Delete(name); err != nil {
			t.Error(err)
		}
	})
	host, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	hc, err := Cookie(host)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := Cookie(ns)
	if err != nil {
		t.Fatal(err)
	}
	if hc == nc || nc == 0 {
		t.Fatalf("cookies: host %d, new netns %d", hc, nc)
	}
	// A listener made inside stays there: the host's 127.0.0.1 does not reach it.
	var ln net.Listener
	if err := Do(ns, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("listener in the new netns reachable from the host netns")
	}
}
