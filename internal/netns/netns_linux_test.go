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
	mainNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
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
	// A socket made inside stays there, whichever goroutine uses it later.
	var ln *net.TCPListener
	if err := Do(ns, func() (err error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		ln, _ = l.(*net.TCPListener)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lc uint64
	rc.Control(func(fd uintptr) { lc, err = SocketCookie(int(fd)) })
	if err != nil || lc != nc {
		t.Fatalf("listener's netns cookie %d (%v), want %d", lc, err, nc)
	}
	// And the main thread, which /proc/PID/ns/net shows, never left the host netns.
	if now, _ := os.Readlink("/proc/self/ns/net"); now != mainNS {
		t.Fatalf("main thread's netns now %s, was %s", now, mainNS)
	}
}
