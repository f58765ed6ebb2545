package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/bpf/redirect/pins"
	"github.com/warrenmesh/warren/internal/eventually"
	"github.com/warrenmesh/warren/internal/netns"
)

var ctx = context.Background()

func enroll(tb testing.TB, k *Kernel, pod Pod) {
	tb.Helper()
	if err := k.Enroll(ctx, pod); err != nil {
		tb.Fatalf("Enroll: %v", err)
	}
}

func actions(tb testing.TB, k *Kernel) [4][3]uint64 {
	tb.Helper()
	s, err := k.stats()
	if err != nil {
		tb.Fatal(err)
	}
	return s.actions
}

func TestOutboundRedirect(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	tunnel(t, tp.pod, k.OrigDst)
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	serve(t, tp.pod, "tcp", "127.0.0.1:9000", tag("pod-loopback"))
	serve(t, tp.pod, "tcp", ap(tp.pod4, 9001), tag("pod-self"))

	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "IPv4", got, err, "tunnel "+ap(tp.peer4, 8080))
	got, err = dial(tp.pod, "tcp6", ap(tp.peer6, 8443), 0)
	expectLine(t, "IPv6", got, err, "tunnel "+ap(tp.peer6, 8443))
	got, err = dialMapped(tp.pod, netip.AddrPortFrom(tp.peer4, 8081))
	expectLine(t, "v4-mapped", got, err, "tunnel "+ap(tp.peer4, 8081))
	err = netns.Do(tp.pod, func() error { // Go's dialers may default to MPTCP one day
		d := net.Dialer{Timeout: 5 * time.Second}
		d.SetMultipathTCP(true)
		c, err := d.Dial("tcp4", ap(tp.peer4, 8082))
		if err != nil {
			return err
		}
		defer c.Close()
		got, err = readLine(c)
		return err
	})
	expectLine(t, "MPTCP", got, err, "tunnel "+ap(tp.peer4, 8082))

	// Bypassed: loopback, the pod's own address, the tunnel's marked sockets.
	got, err = dial(tp.pod, "tcp4", "127.0.0.1:9000", 0)
	expectLine(t, "loopback", got, err, "pod-loopback 127.0.0.1:9000")
	got, err = dial(tp.pod, "tcp4", ap(tp.pod4, 9001), 0)
	expectLine(t, "own address", got, err, "pod-self "+ap(tp.pod4, 9001))
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8080), redirect.DefaultTunnelMark)
	expectLine(t, "tunnel mark", got, err, "peer "+ap(tp.peer4, 8080))

	// Not enrolled: another netns with a look-alike tunnel listener, and the
	// test's own netns, which has no route to the peers at all.
	other := newTopo(t)
	serve(t, other.pod, "tcp4", "127.0.0.1:15001", tag("wrong-tunnel"))
	serve(t, other.peer, "tcp", ":8080", tag("peer"))
	got, err = dial(other.pod, "tcp4", ap(other.peer4, 8080), 0)
	expectLine(t, "not enrolled", got, err, "peer "+ap(other.peer4, 8080))
	got, err = dial(other.pod, "tcp6", ap(other.peer6, 8080), 0)
	expectLine(t, "not enrolled v6", got, err, "peer "+ap(other.peer6, 8080))
	host := serve(t, mustOpen(t, "/proc/self/ns/net"), "tcp4", "127.0.0.1:0", tag("host"))
	c, err := net.DialTimeout("tcp4", host.Addr().String(), time.Second)
	if err != nil {
		t.Fatalf("host netns: %v", err)
	}
	got, err = readLine(c)
	c.Close()
	expectLine(t, "host netns", got, err, "host "+host.Addr().String())

	if n := len(e.stillAttached()); n != 3 {
		t.Errorf("%d of the dataplane's programs attached at the cgroup2 root, want 3", n)
	}

	// Exactly the enrolled pod's connections were counted.
	want := [4][3]uint64{
		{2, 3, 0}, // connect4: IPv4, MPTCP; loopback, own address, marked
		{2, 0, 0}, // connect6: IPv6, v4-mapped
		{4, 0, 0}, // sockops: four re-keyed at ESTABLISHED
		{0, 1, 0}, // sk_lookup: the pod's connection to itself
	}
	if a := actions(t, k); a != want {
		t.Errorf("counters = %v, want %v", a, want)
	}
	waitEntries(t, k, map[string]int{"orig_by_cookie": 0, "orig_by_tuple": 0, "enrolled": 1, "pod_ips": 2})

	// The same through metrics.
	err = testutil.GatherAndCompare(opts.Registerer.(prometheus.Gatherer), strings.NewReader(`
# HELP warren_agent_enrolled_pods Pods whose traffic goes through the tunnel.
# TYPE warren_agent_enrolled_pods gauge
warren_agent_enrolled_pods 1
# HELP warren_agent_bpf_map_entries Entries in the agent's eBPF maps.
# TYPE warren_agent_bpf_map_entries gauge
warren_agent_bpf_map_entries{map="enrolled"} 1
warren_agent_bpf_map_entries{map="node_ips"} 0
warren_agent_bpf_map_entries{map="orig_by_cookie"} 0
warren_agent_bpf_map_entries{map="orig_by_tuple"} 0
warren_agent_bpf_map_entries{map="pod_ips"} 2
warren_agent_bpf_map_entries{map="sockets"} 0
warren_agent_bpf_map_entries{map="tunnel_ports"} 0
warren_agent_bpf_map_entries{map="tunnel_syns"} 0
`), "warren_agent_enrolled_pods", "warren_agent_bpf_map_entries")
	if err != nil {
		t.Error(err)
	}
	n, err := testutil.GatherAndCount(opts.Registerer.(prometheus.Gatherer), "warren_agent_bpf_actions_total")
	if err != nil || n != 12 {
		t.Errorf("warren_agent_bpf_actions_total: %d series, %v; want 12", n, err)
	}
}

func TestInboundSteering(t *testing.T) {
	e := newEnv(t)
	k := e.open(e.options("n1"))
	tp := newTopo(t)
	serve(t, tp.pod, "tcp", ":8080", tag("app"))
	hbone := serve(t, tp.pod, "tcp", ":15008", tag("hbone"))
	inbound := serve(t, tp.pod, "tcp", ":15006", tag("inbound"))
	serve(t, tp.peer, "tcp", ":9090", tag("peer"))
	enroll(t, k, tp.Pod("pod-a"))

	// Enrolled, but no tunnel sockets yet: fail closed.
	got, err := dial(tp.peer, "tcp4", ap(tp.pod4, 8080), 0)
	expectFail(t, "no tunnel sockets", got, err)

	if err := k.SetTunnelSockets(ctx, "pod-a", TunnelSockets{HBONE: hbone.(*net.TCPListener), Inbound: inbound.(*net.TCPListener)}); err != nil {
		t.Fatal(err)
	}
	got, err = dial(tp.peer, "tcp4", ap(tp.pod4, 8080), 0)
	expectLine(t, "to app port", got, err, "inbound "+ap(tp.pod4, 8080))
	got, err = dial(tp.peer, "tcp4", ap(tp.pod4, 15008), 0)
	expectLine(t, "to 15008", got, err, "hbone "+ap(tp.pod4, 15008))
	got, err = dial(tp.peer, "tcp6", ap(tp.pod6, 4444), 0)
	expectLine(t, "to any port, IPv6", got, err, "inbound "+ap(tp.pod6, 4444))
	got, err = dial(tp.peer, "tcp6", ap(tp.pod6, 15008), 0)
	expectLine(t, "to 15008, IPv6", got, err, "hbone "+ap(tp.pod6, 15008))

	// The pod's own connections: to itself, and (the tunnel's, marked) out to the peer.
	got, err = dial(tp.pod, "tcp4", ap(tp.pod4, 8080), 0)
	expectLine(t, "pod to itself", got, err, "app "+ap(tp.pod4, 8080))
	got, err = dial(tp.pod, "tcp6", ap(tp.peer6, 9090), redirect.DefaultTunnelMark)
	expectLine(t, "pod out", got, err, "peer "+ap(tp.peer6, 9090))

	// A socket from another netns is refused.
	other := serve(t, mustOpen(t, "/proc/self/ns/net"), "tcp4", "127.0.0.1:0", tag("x")).(*net.TCPListener)
	if err := k.SetTunnelSockets(ctx, "pod-a", TunnelSockets{HBONE: other, Inbound: other}); err == nil {
		t.Error("SetTunnelSockets took a socket from another netns")
	}
	if err := k.SetTunnelSockets(ctx, "nobody", TunnelSockets{HBONE: hbone.(*net.TCPListener), Inbound: inbound.(*net.TCPListener)}); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("SetTunnelSockets(unknown pod) = %v, want ErrNotEnrolled", err)
	}

	// The tunnel going away fails closed too: its sockets leave the map.
	hbone.Close()
	inbound.Close()
	got, err = dial(tp.peer, "tcp4", ap(tp.pod4, 8080), 0)
	expectFail(t, "tunnel gone", got, err)
	waitEntries(t, k, map[string]int{"sockets": 0})
}

// The kubelet probes an enrolled pod's app from the node: the node's address
// on the pod's link (the gateway of the pod's routes, found at Enroll) or one
// the caller names. Those connections reach the app directly, and every other
// source still goes to the tunnel (and is dropped when it is away: STRICT).
func TestProbesFromNode(t *testing.T) {
	e := newEnv(t)
	k := e.open(e.options("n1"))
	tp := newTopo(t) // peer 10.77.n.2 plays the node; 10.77.n.3 on the same link is another pod
	n := tp.pod4.As4()[2]
	other4 := netip.MustParseAddr(fmt.Sprintf("10.77.%d.3", n))
	other6 := netip.MustParseAddr(fmt.Sprintf("fd77:%x::3", n))
	named4 := netip.MustParseAddr(fmt.Sprintf("10.77.%d.4", n))
	for _, a := range []netip.Addr{other4, named4} {
		ip(t, "-n", tp.peerName, "addr", "add", a.String()+"/24", "dev", "wq")
	}
	ip(t, "-n", tp.peerName, "addr", "add", other6.String()+"/64", "dev", "wq", "nodad")
	ip(t, "-n", tp.podName, "neigh", "replace", other6.String(), "lladdr", fmt.Sprintf("02:77:00:00:%02x:02", n), "dev", "wp", "nud", "permanent")
	ip(t, "-n", tp.podName, "route", "add", "default", "via", tp.peer4.String())
	ip(t, "-n", tp.podName, "-6", "route", "add", "default", "via", tp.peer6.String())

	serve(t, tp.pod, "tcp", ":8080", tag("app"))
	enroll(t, k, Pod{UID: "pod-a", Netns: tp.Pod("").Netns, IPs: []netip.Addr{tp.pod4, tp.pod6}, NodeIPs: []netip.Addr{named4}})
	pods, err := k.Pods(ctx)
	if err != nil || len(pods) != 1 {
		t.Fatalf("Pods() = %v, %v", pods, err)
	}
	want := []netip.Addr{named4, tp.peer4, tp.peer6}
	if got := pods[0].NodeIPs; !slices.Equal(got, want) {
		t.Errorf("node IPs = %v, want %v (the named one, then the routes' gateways)", got, want)
	}

	from := func(src netip.Addr, dst string) (string, error) {
		var line string
		err := netns.Do(tp.peer, func() error {
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
			c, err := d.Dial("tcp", dst)
			if err != nil {
				return err
			}
			defer c.Close()
			line, err = readLine(c)
			return err
		})
		return line, err
	}
	check := func(state string, tunnel bool) {
		t.Helper()
		for _, src := range []netip.Addr{tp.peer4, named4, tp.peer6} {
			dst := ap(tp.pod4, 8080)
			if src.Is6() {
				dst = ap(tp.pod6, 8080)
			}
			got, err := from(src, dst)
			expectLine(t, state+": probe from node "+src.String(), got, err, "app "+dst)
		}
		for _, src := range []netip.Addr{other4, other6} {
			dst := ap(tp.pod4, 8080)
			if src.Is6() {
				dst = ap(tp.pod6, 8080)
			}
			got, err := from(src, dst)
			if tunnel {
				expectLine(t, state+": from "+src.String(), got, err, "inbound "+dst)
			} else {
				expectFail(t, state+": from "+src.String(), got, err)
			}
		}
	}
	check("no tunnel (STRICT, fail closed)", false)

	hbone := serve(t, tp.pod, "tcp", ":15008", tag("hbone"))
	inbound := serve(t, tp.pod, "tcp", ":15006", tag("inbound"))
	if err := k.SetTunnelSockets(ctx, "pod-a", TunnelSockets{HBONE: hbone.(*net.TCPListener), Inbound: inbound.(*net.TCPListener)}); err != nil {
		t.Fatal(err)
	}
	check("tunnel", true)
	waitEntries(t, k, map[string]int{"node_ips": 3})

	// Unenroll removes them.
	if err := k.Unenroll(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, k, map[string]int{"node_ips": 0, "pod_ips": 0})
}

// A restarted agent adopts each pod's node addresses with it, so probes keep
// passing, and drops node addresses of netns no longer enrolled.
func TestNodeIPsAdopted(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k1 := e.open(opts)
	tp := newTopo(t)
	node := netip.MustParseAddr("10.250.0.11")
	enroll(t, k1, Pod{UID: "pod-a", Netns: tp.Pod("").Netns, IPs: []netip.Addr{tp.pod4, tp.pod6}, NodeIPs: []netip.Addr{node, tp.peer6}})
	// A leftover of some older agent: a node address for a netns nobody enrolled.
	stale := nodeIPKey(12345, node)
	one := uint8(1)
	if err := k1.objs.NodeIps.Update(&stale, &one, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := k1.Close(); err != nil {
		t.Fatal(err)
	}
	opts.Registerer = prometheus.NewRegistry()
	k2 := e.open(opts)
	pods, err := k2.Pods(ctx)
	if err != nil || len(pods) != 1 {
		t.Fatalf("Pods() = %v, %v", pods, err)
	}
	got := slices.Clone(pods[0].NodeIPs)
	slices.SortFunc(got, netip.Addr.Compare)
	if want := []netip.Addr{node, tp.peer6}; !slices.Equal(got, want) {
		t.Errorf("adopted node IPs %v, want %v", got, want)
	}
	waitEntries(t, k2, map[string]int{"node_ips": 2})
	// Enrolling again without them removes them.
	enroll(t, k2, tp.Pod("pod-a"))
	waitEntries(t, k2, map[string]int{"node_ips": 0})
}

func TestUnenroll(t *testing.T) {
	e := newEnv(t)
	k := e.open(e.options("n1"))
	tp := newTopo(t)
	tunnel(t, tp.pod, k.OrigDst)
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	serve(t, tp.pod, "tcp", ":8080", tag("app"))
	hbone := serve(t, tp.pod, "tcp", ":15008", tag("hbone"))
	inbound := serve(t, tp.pod, "tcp", ":15006", tag("inbound"))
	enroll(t, k, tp.Pod("pod-a"))
	enroll(t, k, tp.Pod("pod-a")) // idempotent
	if err := k.SetTunnelSockets(ctx, "pod-a", TunnelSockets{HBONE: hbone.(*net.TCPListener), Inbound: inbound.(*net.TCPListener)}); err != nil {
		t.Fatal(err)
	}
	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "enrolled, out", got, err, "tunnel "+ap(tp.peer4, 8080))
	got, err = dial(tp.peer, "tcp4", ap(tp.pod4, 8080), 0)
	expectLine(t, "enrolled, in", got, err, "inbound "+ap(tp.pod4, 8080))

	if err := k.Unenroll(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	if err := k.Unenroll(ctx, "pod-a"); err != nil {
		t.Fatalf("Unenroll again: %v", err)
	}
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "unenrolled, out", got, err, "peer "+ap(tp.peer4, 8080))
	got, err = dial(tp.pod, "tcp6", ap(tp.peer6, 8080), 0)
	expectLine(t, "unenrolled, out v6", got, err, "peer "+ap(tp.peer6, 8080))
	got, err = dial(tp.peer, "tcp4", ap(tp.pod4, 8080), 0)
	expectLine(t, "unenrolled, in", got, err, "app "+ap(tp.pod4, 8080))

	if pods, _ := k.Pods(ctx); len(pods) != 0 {
		t.Errorf("Pods() = %v after unenroll", pods)
	}
	waitEntries(t, k, map[string]int{"enrolled": 0, "pod_ips": 0, "sockets": 0})
	if _, err := os.Stat(filepath.Join(k.opts.PinDir, linksDir, skLookupPrefix+"pod-a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sk_lookup link pin still there: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	notNetns := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notNetns, nil, 0o600)
	for _, tc := range []struct {
		name string
		pod  Pod
		want string
	}{
		{"vanished netns", Pod{UID: "a", Netns: "/run/netns/wtest-does-not-exist", IPs: []netip.Addr{tp.pod4}}, "no such file"},
		{"not a netns", Pod{UID: "a", Netns: notNetns, IPs: []netip.Addr{tp.pod4}}, "not a network namespace"},
		{"uts netns", Pod{UID: "a", Netns: "/proc/self/ns/uts", IPs: []netip.Addr{tp.pod4}}, "not a network namespace"},
		{"bad uid", Pod{UID: "../a", Netns: "/proc/self/ns/net", IPs: []netip.Addr{tp.pod4}}, "uid"},
	} {
		err := k.Enroll(ctx, tc.pod)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Enroll = %v, want an error about %q", tc.name, err, tc.want)
		}
	}
	enroll(t, k, tp.Pod("pod-a"))
	if err := k.Enroll(ctx, tp.Pod("pod-b")); !errors.Is(err, ErrInvalidPod) {
		t.Errorf("second pod in the same netns: %v, want ErrInvalidPod", err)
	}
	pods, _ := k.Pods(ctx)
	if len(pods) != 1 || pods[0].UID != "pod-a" {
		t.Errorf("Pods() = %v, want only pod-a", pods)
	}
	entries, _ := os.ReadDir(filepath.Join(k.opts.PinDir, linksDir))
	if len(entries) != 4 { // connect4, connect6, sockops, sk_lookup_pod-a
		t.Errorf("pins after failed enrollments: %v", entries)
	}
	if err := testutil.GatherAndCompare(opts.Registerer.(prometheus.Gatherer), strings.NewReader(`
# HELP warren_agent_errors_total Failed dataplane operations, by operation.
# TYPE warren_agent_errors_total counter
warren_agent_errors_total{op="enroll"} 4
`), "warren_agent_errors_total"); err != nil {
		t.Error(err) // three bad netns and the shared one; the bad uid fails validation before counting
	}

	bad := e.options("n2")
	bad.PinDir = "/tmp/warren-not-bpffs"
	if _, err := Open(ctx, bad); err == nil || !strings.Contains(err.Error(), "not inside bpffs") {
		t.Errorf("Open with a pin dir outside bpffs: %v", err)
	}
	bad = e.options("a/b")
	if _, err := Open(ctx, bad); err == nil {
		t.Error("Open with node name a/b succeeded")
	}
}

// A restarted agent adopts the pins: a client connecting in a loop all
// through the restart is always redirected.
func TestAdoptOnRestart(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k1 := e.open(opts)
	tp := newTopo(t)
	enroll(t, k1, tp.Pod("pod-a"))
	table, err := OpenOrigDstTable(k1.opts.PinDir) // the tunnel's own handle, as from another process
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	tunnel(t, tp.pod, table.Conn)
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	hbone := serve(t, tp.pod, "tcp", ":15008", tag("hbone"))
	inbound := serve(t, tp.pod, "tcp", ":15006", tag("inbound"))
	if err := k1.SetTunnelSockets(ctx, "pod-a", TunnelSockets{HBONE: hbone.(*net.TCPListener), Inbound: inbound.(*net.TCPListener)}); err != nil {
		t.Fatal(err)
	}

	// Clients in a loop: the pod out to the peer, the peer in to the pod.
	var (
		stop       atomic.Bool
		ok, failed atomic.Int64
		firstBad   atomic.Value
		wg         sync.WaitGroup
	)
	for _, c := range []struct {
		ns         *os.File
		addr, want string
	}{
		{tp.pod, ap(tp.peer4, 8080), "tunnel " + ap(tp.peer4, 8080)},
		{tp.peer, ap(tp.pod4, 8080), "inbound " + ap(tp.pod4, 8080)},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			netns.Do(c.ns, func() error {
				for !stop.Load() {
					got, err := dialHere("tcp4", c.addr, 0)
					if err != nil || got != c.want {
						failed.Add(1)
						firstBad.CompareAndSwap(nil, c.addr+": "+got+" "+errString(err))
						continue
					}
					ok.Add(1)
				}
				return nil
			})
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() }) // also when a wait below fails
	waitFor(t, "connections before the restart", func() bool { return ok.Load() > 100 })
	k2 := k1
	for range 3 { // restart a few times
		before := ok.Load()
		if err := k2.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "connections with no agent", func() bool { return ok.Load() > before+100 })
		opts.Registerer = prometheus.NewRegistry()
		k2 = e.open(opts)
		during := ok.Load()
		waitFor(t, "connections after the restart", func() bool { return ok.Load() > during+100 })
	}
	stop.Store(true)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d connections escaped or failed during the restart; first: %v", n, n+ok.Load(), firstBad.Load())
	}
	t.Logf("%d connections, all redirected", ok.Load())

	// The pinned links now run k2's programs.
	for _, c := range []struct {
		name string
		prog *ebpf.Program
	}{{"connect4", k2.objs.WarrenConnect4}, {"connect6", k2.objs.WarrenConnect6}, {"sockops", k2.objs.WarrenSockops}, {skLookupPrefix + "pod-a", k2.objs.WarrenSkLookup}} {
		l, err := link.LoadPinnedLink(filepath.Join(k2.opts.PinDir, linksDir, c.name), nil)
		if err != nil {
			t.Fatal(err)
		}
		li, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		pi, _ := c.prog.Info()
		if id, _ := pi.ID(); li.Program != id {
			t.Errorf("link %s runs program %d, want k2's %d", c.name, li.Program, id)
		}
	}

	pods, err := k2.Pods(ctx)
	if err != nil || len(pods) != 1 || pods[0].UID != "pod-a" || len(pods[0].IPs) != 2 {
		t.Errorf("adopted pods = %v, %v", pods, err)
	}
	got, err := dial(tp.peer, "tcp4", ap(tp.pod4, 8080), 0)
	expectLine(t, "inbound after restart", got, err, "inbound "+ap(tp.pod4, 8080))
	if a := actions(t, k2); a[0][0]+a[3][0] < uint64(ok.Load()) {
		t.Errorf("counters not kept across the restart: connect4 %d + sk_lookup %d redirected < %d", a[0][0], a[3][0], ok.Load())
	}

	if err := k2.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "after uninstall", got, err, "peer "+ap(tp.peer4, 8080))
	if _, err := os.Stat(k2.opts.PinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir left after uninstall: %v", err)
	}
}

// The original destination outlives the client: a client that writes and
// closes before the tunnel gets round to accept() is still carried.
// TestTunnelPorts: outbound connections go to the port tunnel_ports gives
// for the pod's netns (a tunnel generation's own), 15001 without an entry;
// a new entry switches new connections at once; original destinations work
// on any port and their entries go when the tunnel's side closes.
func TestTunnelPorts(t *testing.T) {
	e := newEnv(t)
	k := e.open(e.options("n1"))
	tp := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	pods, err := k.Pods(ctx)
	if err != nil || len(pods) != 1 {
		t.Fatalf("Pods() = %v, %v", pods, err)
	}
	cookie := pods[0].NetnsCookie
	gen := func(name, network, addr string) uint16 {
		ln := serve(t, tp.pod, network, addr, func(c net.Conn) string {
			orig, err := k.OrigDst(c.(*net.TCPConn))
			if err != nil {
				return name + " error " + err.Error()
			}
			return name + " " + orig.String()
		})
		return uint16(ln.Addr().(*net.TCPAddr).Port)
	}
	gen("default", "tcp4", "127.0.0.1:15001")
	old4 := gen("old", "tcp4", "127.0.0.1:0")
	new4, new6 := gen("new", "tcp4", "127.0.0.1:0"), gen("new", "tcp6", "[::1]:0")

	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "no entry", got, err, "default "+ap(tp.peer4, 8080))
	if err := pins.SetOutboundPorts(k.objs.TunnelPorts, cookie, old4, 0); err != nil {
		t.Fatal(err)
	}
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "old generation", got, err, "old "+ap(tp.peer4, 8080))
	if err := pins.SetOutboundPorts(k.objs.TunnelPorts, cookie, new4, new6); err != nil {
		t.Fatal(err)
	}
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8081), 0)
	expectLine(t, "new generation", got, err, "new "+ap(tp.peer4, 8081))
	got, err = dial(tp.pod, "tcp6", ap(tp.peer6, 8082), 0)
	expectLine(t, "new generation, IPv6", got, err, "new "+ap(tp.peer6, 8082))
	got, err = dialMapped(tp.pod, netip.AddrPortFrom(tp.peer4, 8083))
	expectLine(t, "new generation, v4-mapped", got, err, "new "+ap(tp.peer4, 8083))
	if p4, p6, err := pins.OutboundPorts(k.objs.TunnelPorts, cookie); err != nil || p4 != new4 || p6 != new6 {
		t.Errorf("OutboundPorts = %d, %d, %v; want %d, %d", p4, p6, err, new4, new6)
	}
	// The tunnel's side closed each connection: their entries are gone,
	// whatever the listener's port.
	waitEntries(t, k, map[string]int{"orig_by_cookie": 0, "orig_by_tuple": 0, "tunnel_ports": 1})

	if err := k.Unenroll(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, k, map[string]int{"tunnel_ports": 0})
}

func TestOrigDstOutlivesClient(t *testing.T) {
	e := newEnv(t)
	k := e.open(e.options("n1"))
	tp := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	var ln net.Listener
	if err := netns.Do(tp.pod, func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:15001"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err := netns.Do(tp.pod, func() error {
		c, err := net.Dial("tcp4", ap(tp.peer4, 8080))
		if err != nil {
			return err
		}
		c.Write([]byte("hello"))
		return c.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the client's side is gone by now
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	orig, err := k.OrigDst(c.(*net.TCPConn))
	if err != nil || orig.String() != ap(tp.peer4, 8080) {
		t.Errorf("OrigDst after the client closed = %v, %v; want %s", orig, err, ap(tp.peer4, 8080))
	}
	c.Close()
	waitEntries(t, k, map[string]int{"orig_by_tuple": 0})
}

// RemovePins undoes an agent that is gone, without loading anything.
func TestRemovePins(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	tunnel(t, tp.pod, k.OrigDst)
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "installed", got, err, "tunnel "+ap(tp.peer4, 8080))
	k.Close()
	if err := RemovePins(opts); err != nil {
		t.Fatal(err)
	}
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "pins removed", got, err, "peer "+ap(tp.peer4, 8080))
	if !poll(5*time.Second, func() bool { return len(e.stillAttached()) == 0 }) {
		t.Errorf("still attached after RemovePins: %v", e.stillAttached())
	}
	if _, err := os.Stat(filepath.Join(e.bpffs, "warren")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s/warren left: %v", e.bpffs, err)
	}
	if err := RemovePins(opts); err != nil {
		t.Errorf("RemovePins again: %v", err)
	}
}

// Maps go back to their size before the test after 100k short connections
// (more than the connection maps hold: a leak would also fail connections),
// and after connections refused because no tunnel listens.
func TestMapsBackToBaseline(t *testing.T) {
	e := newEnv(t)
	k := e.open(e.options("n1"))
	tp := newTopo(t)
	refused := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	enroll(t, k, refused.Pod("pod-b"))
	tunnel(t, tp.pod, k.OrigDst)
	baseline := map[string]int{"orig_by_cookie": 0, "orig_by_tuple": 0, "enrolled": 2, "pod_ips": 4, "sockets": 0}
	waitEntries(t, k, baseline)

	const n = 100000
	want := "tunnel " + ap(tp.peer4, 8080)
	start := time.Now()
	err := netns.Do(tp.pod, func() error {
		for i := range n {
			got, err := dialHere("tcp4", ap(tp.peer4, 8080), 0)
			if err != nil || got != want {
				return errors.New("connection " + strconv.Itoa(i) + ": " + got + " " + errString(err))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d redirected connections in %v", n, time.Since(start))
	err = netns.Do(refused.pod, func() error {
		for range 200 {
			if _, err := dialHere("tcp4", ap(refused.peer4, 8080), 0); err == nil {
				return errors.New("connected with no tunnel listening")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitEntries(t, k, baseline)
	if a := actions(t, k); a[0][0] != n+200 || a[2][0] != n {
		t.Errorf("counters: connect4 redirected %d (want %d), sockops %d (want %d)", a[0][0], n+200, a[2][0], n)
	}
}

// Two agents on one kernel, each with its own pins and pods, do not see
// each other's connections; uninstalling one leaves the other working.
func TestTwoAgents(t *testing.T) {
	e := newEnv(t)
	ka := e.open(e.options("node-a"))
	kb := e.open(e.options("node-b"))
	ta, tb := newTopo(t), newTopo(t)
	enroll(t, ka, ta.Pod("pod-a"))
	enroll(t, kb, tb.Pod("pod-b"))
	crossErrs := make(chan error, 10)
	tunnel(t, ta.pod, func(c syscall.Conn) (netip.AddrPort, error) {
		_, err := kb.OrigDst(c) // B's table, for A's connection
		crossErrs <- err
		return ka.OrigDst(c)
	})
	tunnel(t, tb.pod, kb.OrigDst)
	serve(t, ta.peer, "tcp", ":8080", tag("peer"))

	got, err := dial(ta.pod, "tcp4", ap(ta.peer4, 8080), 0)
	expectLine(t, "a", got, err, "tunnel "+ap(ta.peer4, 8080))
	got, err = dial(tb.pod, "tcp6", ap(tb.peer6, 8080), 0)
	expectLine(t, "b", got, err, "tunnel "+ap(tb.peer6, 8080))
	if a, b := actions(t, ka), actions(t, kb); a[0][0] != 1 || a[1][0] != 0 || b[0][0] != 0 || b[1][0] != 1 {
		t.Errorf("counters: a %v, b %v", a, b)
	}

	// A's tunnel asking B's table finds nothing.
	if crossErr := <-crossErrs; !errors.Is(crossErr, ErrNoOrigDst) {
		t.Errorf("B's table on A's connection: %v, want ErrNoOrigDst", crossErr)
	}

	if err := ka.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = dial(ta.pod, "tcp4", ap(ta.peer4, 8080), 0)
	expectLine(t, "a uninstalled", got, err, "peer "+ap(ta.peer4, 8080))
	got, err = dial(tb.pod, "tcp4", ap(tb.peer4, 8080), 0)
	expectLine(t, "b after a's uninstall", got, err, "tunnel "+ap(tb.peer4, 8080))
}

// Another eBPF user's program on the same hook keeps running, before and
// after ours, and ours keeps working next to it.
func TestCoexistence(t *testing.T) {
	e := newEnv(t)
	cg, err := Cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	calls, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer calls.Close()
	// The other program counts connect4 calls and allows them all.
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.CGroupSockAddr,
		AttachType: ebpf.AttachCGroupInet4Connect,
		License:    "Apache-2.0",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, calls.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupInet4Connect, Program: other})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	count := func() uint64 {
		var v uint64
		if err := calls.Lookup(uint32(0), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	k := e.open(e.options("n1"))
	tp := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	tunnel(t, tp.pod, k.OrigDst)
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))

	c0 := count()
	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "ours with another program", got, err, "tunnel "+ap(tp.peer4, 8080))
	if count() <= c0 {
		t.Error("the other program did not run")
	}
	if err := k.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	c1 := count()
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "after our uninstall", got, err, "peer "+ap(tp.peer4, 8080))
	if count() <= c1 {
		t.Error("the other program stopped running when ours was uninstalled")
	}
}

func waitEntries(tb testing.TB, k *Kernel, want map[string]int) {
	tb.Helper()
	var last map[string]int
	ok := poll(5*time.Second, func() bool {
		s, err := k.stats()
		if err != nil {
			tb.Fatal(err)
		}
		last = s.mapEntries
		for name, n := range want {
			if last[name] != n {
				return false
			}
		}
		return true
	})
	if !ok {
		tb.Errorf("map entries = %v, want %v", last, want)
	}
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	eventually.True(tb, what, 10*time.Second, cond)
}

// poll reports whether cond held within d.
func poll(d time.Duration, cond func() bool) bool {
	return eventually.Wait(d, func() error {
		if cond() {
			return nil
		}
		return errors.New("not yet")
	}) == nil
}

func mustOpen(tb testing.TB, path string) *os.File {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
