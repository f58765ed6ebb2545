package nodeagent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/netns/netnstest"
)

// The test binary switches network namespaces on other threads only.
func init() { runtime.LockOSThread() }

func requireKernel(tb testing.TB) {
	tb.Helper()
	netnstest.RequireKernel(tb, "attaches eBPF programs and creates network namespaces")
}

// testEnv is a bpffs of the test's own; everything pinned in it goes when
// it is unmounted at cleanup, so nothing stays attached after the test,
// whatever happened in it.
type testEnv struct {
	tb      testing.TB
	bpffs   string
	progIDs []ebpf.ProgramID // of every dataplane opened
}

func newEnv(tb testing.TB) *testEnv {
	tb.Helper()
	requireKernel(tb)
	dir := filepath.Join(tb.TempDir(), "bpffs") // Open mounts it
	e := &testEnv{tb: tb, bpffs: dir}
	// Runs last: whatever the test did, none of its programs is still
	// attached to the cgroup2 root once the dataplanes are closed and the
	// bpffs holding their pins is gone.
	tb.Cleanup(func() {
		if !poll(5*time.Second, func() bool { return len(e.stillAttached()) == 0 }) {
			tb.Errorf("programs still attached at the cgroup2 root after the test: %v", e.stillAttached())
		}
	})
	tb.Cleanup(func() {
		// Unpin first: unmounting alone frees the pins only if no other
		// mount namespace (say, a local-cluster node started meanwhile)
		// copied this mount.
		nodes, _ := os.ReadDir(filepath.Join(dir, "warren"))
		for _, n := range nodes {
			if err := removePinDir(filepath.Join(dir, "warren", n.Name())); err != nil {
				tb.Error(err)
			}
		}
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	return e
}

func (e *testEnv) options(node string) Options {
	logger := slog.New(slog.DiscardHandler) // benchmarks print what is logged
	if _, ok := e.tb.(*testing.T); ok {
		logger = slog.New(slog.NewTextHandler(testWriter{e.tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return Options{
		Node:       node,
		BPFFS:      e.bpffs,
		Logger:     logger,
		Registerer: prometheus.NewRegistry(),
	}
}

// open opens a dataplane that is closed (not uninstalled) at cleanup.
func (e *testEnv) open(opts Options) *Kernel {
	e.tb.Helper()
	k, err := Open(context.Background(), opts)
	if err != nil {
		e.tb.Fatalf("Open: %v", err)
	}
	e.tb.Cleanup(func() { k.Close() })
	for _, p := range []*ebpf.Program{k.objs.WarrenConnect4, k.objs.WarrenConnect6, k.objs.WarrenSockops} {
		info, err := p.Info()
		if err != nil {
			e.tb.Fatal(err)
		}
		id, _ := info.ID()
		e.progIDs = append(e.progIDs, id)
	}
	return k
}

// stillAttached lists this test's programs attached at the cgroup2 root.
func (e *testEnv) stillAttached() []ebpf.ProgramID {
	root, err := Cgroup2Root()
	if err != nil {
		e.tb.Fatal(err)
	}
	cg, err := os.Open(root)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer cg.Close()
	var left []ebpf.ProgramID
	for _, a := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect, ebpf.AttachCGroupSockOps} {
		r, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: a})
		if err != nil {
			e.tb.Fatalf("query %v: %v", a, err)
		}
		for _, p := range r.Programs {
			if slices.Contains(e.progIDs, p.ID) {
				left = append(left, p.ID)
			}
		}
	}
	return left
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

var nsSeq atomic.Int32

// topo is a pod network namespace wired by a veth to a peer one:
// pod 10.77.<n>.1 / fd77:<n>::1, peer 10.77.<n>.2 / fd77:<n>::2.
type topo struct {
	pod, peer         *os.File
	podName, peerName string
	pod4, pod6        netip.Addr
	peer4, peer6      netip.Addr
}

func newTopo(tb testing.TB) *topo {
	tb.Helper()
	n := nsSeq.Add(1)
	if n > 250 {
		tb.Fatal("out of test subnets")
	}
	t := &topo{
		podName:  fmt.Sprintf("wtest-%d-pod%d", os.Getpid(), n),
		peerName: fmt.Sprintf("wtest-%d-peer%d", os.Getpid(), n),
		pod4:     netip.MustParseAddr(fmt.Sprintf("10.77.%d.1", n)),
		peer4:    netip.MustParseAddr(fmt.Sprintf("10.77.%d.2", n)),
		pod6:     netip.MustParseAddr(fmt.Sprintf("fd77:%x::1", n)),
		peer6:    netip.MustParseAddr(fmt.Sprintf("fd77:%x::2", n)),
	}
	t.pod = addNetns(tb, t.podName)
	t.peer = addNetns(tb, t.peerName)
	podMAC, peerMAC := fmt.Sprintf("02:77:00:00:%02x:01", n), fmt.Sprintf("02:77:00:00:%02x:02", n)
	ip(tb, "link", "add", "wp", "address", podMAC, "netns", t.podName, "type", "veth",
		"peer", "name", "wq", "address", peerMAC, "netns", t.peerName)
	for _, side := range []struct {
		ns, dev        string
		a4, a6         netip.Addr
		other4, other6 netip.Addr
		otherMAC       string
	}{
		{t.podName, "wp", t.pod4, t.pod6, t.peer4, t.peer6, peerMAC},
		{t.peerName, "wq", t.peer4, t.peer6, t.pod4, t.pod6, podMAC},
	} {
		ip(tb, "-n", side.ns, "addr", "add", side.a4.String()+"/24", "dev", side.dev)
		ip(tb, "-n", side.ns, "addr", "add", side.a6.String()+"/64", "dev", side.dev, "nodad")
		ip(tb, "-n", side.ns, "link", "set", side.dev, "up")
		// Static neighbours: a fresh veth may ignore the first neighbour
		// solicitation, which costs the first IPv6 SYN a 1 s retransmit.
		for _, a := range []netip.Addr{side.other4, side.other6} {
			ip(tb, "-n", side.ns, "neigh", "replace", a.String(), "lladdr", side.otherMAC, "dev", side.dev, "nud", "permanent")
		}
	}
	return t
}

func (t *topo) Pod(uid string) Pod {
	return Pod{UID: uid, Netns: filepath.Join(netns.RunDir, t.podName), IPs: []netip.Addr{t.pod4, t.pod6}}
}

func addNetns(tb testing.TB, name string) *os.File {
	tb.Helper()
	ns, err := netns.Add(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ns.Close()
		if err := netns.Delete(name); err != nil {
			tb.Error(err)
		}
	})
	return ns
}

func ip(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// serve listens inside ns and answers each connection with one line, then closes it.
func serve(tb testing.TB, ns *os.File, network, addr string, reply func(net.Conn) string) net.Listener {
	tb.Helper()
	var ln net.Listener
	err := netns.Do(ns, func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false) // a SOCKMAP takes no MPTCP socket
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	})
	if err != nil {
		tb.Fatalf("listen %s %s: %v", network, addr, err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "%s\n", reply(c))
			}()
		}
	}()
	return ln
}

func tag(s string) func(net.Conn) string {
	return func(c net.Conn) string { return s + " " + c.LocalAddr().String() }
}

// tunnel stands in for the ztunnel's outbound listeners in the pod netns:
// it answers with the original destination of each connection.
func tunnel(tb testing.TB, ns *os.File, lookup func(syscall.Conn) (netip.AddrPort, error)) {
	reply := func(c net.Conn) string {
		orig, err := lookup(c.(*net.TCPConn))
		if err != nil {
			return "tunnel error " + err.Error()
		}
		return "tunnel " + orig.String()
	}
	serve(tb, ns, "tcp4", "127.0.0.1:15001", reply)
	serve(tb, ns, "tcp6", "[::1]:15001", reply)
}

// dial connects from inside ns and returns the line the server sent.
func dial(ns *os.File, network, addr string, mark uint32) (string, error) {
	var line string
	err := netns.Do(ns, func() error {
		var err error
		line, err = dialHere(network, addr, mark)
		return err
	})
	return line, err
}

// markedDialer dials with a 5 s timeout and, if mark is not 0, SO_MARK mark
// on the socket (the tunnel's mark: the programs leave it alone).
func markedDialer(mark uint32) net.Dialer {
	d := net.Dialer{Timeout: 5 * time.Second}
	if mark != 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) })
			return errors.Join(err, serr)
		}
	}
	return d
}

// dialHere is dial on the current thread's netns.
func dialHere(network, addr string, mark uint32) (string, error) {
	d := markedDialer(mark)
	c, err := d.Dial(network, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return readLine(c)
}

func readLine(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// dialMapped connects an AF_INET6 socket to the v4-mapped form of dst.
func dialMapped(ns *os.File, dst netip.AddrPort) (string, error) {
	var line string
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrInet6{Port: int(dst.Port()), Addr: netip.AddrFrom16(dst.Addr().As16()).As16()}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return fmt.Errorf("connect %v: %w", sa.Addr, err)
		}
		f := os.NewFile(uintptr(fd), "mapped")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			return err
		}
		defer c.Close()
		line, err = readLine(c)
		return err
	})
	return line, err
}

func expectLine(tb testing.TB, what, got string, err error, want string) {
	tb.Helper()
	if err != nil {
		tb.Errorf("%s: %v, want %q", what, err, want)
	} else if got != want {
		tb.Errorf("%s: got %q, want %q", what, got, want)
	}
}

func expectFail(tb testing.TB, what, got string, err error) {
	tb.Helper()
	if err == nil {
		tb.Errorf("%s: got %q, want a failed connection", what, got)
	}
}

func ap(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
