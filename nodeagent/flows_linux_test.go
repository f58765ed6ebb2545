package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/netns"
)

// staticPods resolves a fixed set of addresses.
type staticPods map[netip.Addr]PodMeta

func (s staticPods) PodByIP(ip netip.Addr) (PodMeta, bool) {
	p, ok := s[ip.Unmap()]
	return p, ok
}

// openFlows opens a flow collector next to k, reading until cleanup.
func (e *testEnv) openFlows(opts Options, pods PodResolver) *FlowCollector {
	e.tb.Helper()
	c, err := OpenFlows(FlowOptions{Options: opts, Pods: pods})
	if err != nil {
		e.tb.Fatalf("OpenFlows: %v", err)
	}
	info, err := c.objs.WarrenFlows.Info()
	if err != nil {
		e.tb.Fatal(err)
	}
	id, _ := info.ID()
	e.progIDs = append(e.progIDs, id)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- c.Run(ctx) }()
	e.tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.tb.Errorf("Run: %v", err)
		}
		c.Close()
	})
	return c
}

// sink serves in ns: it reads each connection to its end, then writes reply bytes and closes.
func sink(tb testing.TB, ns *os.File, addr string, reply int) {
	tb.Helper()
	var ln net.Listener
	err := netns.Do(ns, func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		tb.Fatal(err)
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
				c.SetDeadline(time.Now().Add(60 * time.Second))
				io.Copy(io.Discard, c)
				c.Write(bytes.Repeat([]byte{'r'}, reply))
			}()
		}
	}()
}

// transfer connects from ns (with SO_MARK mark if not 0), sends send bytes,
// half-closes, reads the reply to its end, and returns its length.
func transfer(ns *os.File, addr string, mark uint32, send int) (int, error) {
	var c net.Conn
	err := netns.Do(ns, func() error {
		d := markedDialer(mark)
		var err error
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(bytes.Repeat([]byte{'s'}, send)); err != nil {
		return 0, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, err
	}
	n, err := io.Copy(io.Discard, c)
	return int(n), err
}

// relay stands in for the ztunnel's outbound side in the pod netns: each
// redirected connection is carried to its original destination.
func relay(tb testing.TB, ns *os.File, k *Kernel) {
	tb.Helper()
	var ln net.Listener
	err := netns.Do(ns, func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		ln, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:15001")
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	// Cleanup (before the Kernel's, registered earlier) stops accepting,
	// ends the connections still relayed and waits for every goroutine: none
	// may read the Kernel's maps while it closes them.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				orig, err := k.OrigDst(c.(*net.TCPConn))
				if err != nil {
					return
				}
				var up net.Conn
				err = netns.Do(ns, func() (err error) {
					d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
						return rc.Control(func(fd uintptr) {
							unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, redirect.DefaultTunnelMark)
						})
					}}
					up, err = d.Dial("tcp", orig.String())
					return err
				})
				if err != nil {
					return
				}
				mu.Lock()
				conns[up] = true
				mu.Unlock()
				defer func() {
					mu.Lock()
					delete(conns, up)
					mu.Unlock()
					up.Close()
				}()
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			})
		}
	})
}

// waitFlow returns the first event from events that match accepts.
func waitFlow(tb testing.TB, events <-chan FlowEvent, what string, match func(*FlowEvent) bool) FlowEvent {
	tb.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-events:
			tb.Logf("flow %s %s %v -> %v (dst %v) sent %d recv %d", e.Kind, e.Hop, e.Local, e.Remote, e.Destination, e.BytesSent, e.BytesReceived)
			if match(&e) {
				return e
			}
		case <-timeout:
			tb.Fatalf("%s: no flow event", what)
			return FlowEvent{}
		}
	}
}

func endTo(dst netip.AddrPort, hop string) func(*FlowEvent) bool {
	return func(e *FlowEvent) bool { return e.Kind == FlowEnd && e.Hop == hop && e.Destination == dst }
}

// A known transfer is counted to the byte, each way, once per connection:
// the app's hop (with its original destination) and the tunnel's hop, and
// nothing of the tunnel's accepted side.
func TestFlowBytes(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	pods := staticPods{
		tp.pod4:  {Namespace: "ns-a", Name: "a-1", Workload: "a", ServiceAccount: "sa-a"},
		tp.peer4: {Namespace: "ns-b", Name: "b-1", Workload: "b"},
	}
	for ip, p := range pods {
		p.SetIdentity("cluster.local")
		pods[ip] = p
	}
	c := e.openFlows(opts, pods)
	events, cancel := c.Subscribe(nil)
	defer cancel()
	enroll(t, k, tp.Pod("pod-a"))
	relay(t, tp.pod, k)
	const send, reply = 1_000_003, 250_007
	sink(t, tp.peer, ":8080", reply)
	dst := netip.AddrPortFrom(tp.peer4, 8080)

	got, err := transfer(tp.pod, dst.String(), 0, send)
	if err != nil || got != reply {
		t.Fatalf("transfer: %d bytes, %v; want %d", got, err, reply)
	}
	ends := map[string]FlowEvent{}
	waitFlow(t, events, "both hops", func(e *FlowEvent) bool {
		if e.Kind == FlowEnd && e.Destination == dst {
			ends[e.Hop] = *e
		}
		return len(ends) == 2
	})
	for _, hop := range []string{HopApp, HopTunnel} {
		ev := ends[hop]
		if ev.BytesSent != send || ev.BytesReceived != reply {
			t.Errorf("%s: sent %d, received %d; want %d, %d", hop, ev.BytesSent, ev.BytesReceived, send, reply)
		}
		if ev.End != EndClosed || ev.Established.IsZero() || ev.SRTT <= 0 || ev.Duration() <= 0 {
			t.Errorf("%s: end %q established %v srtt %v duration %v", hop, ev.End, ev.Established, ev.SRTT, ev.Duration())
		}
		if ev.SourcePod.Workload != "a" || ev.SourcePod.Identity != "spiffe://cluster.local/ns/ns-a/sa/sa-a" ||
			ev.DestinationPod.Workload != "b" || ev.DestinationPod.Identity != "spiffe://cluster.local/ns/ns-b/sa/default" {
			t.Errorf("%s: source %+v, destination %+v", hop, ev.SourcePod, ev.DestinationPod)
		}
		if hop == HopApp && ev.Remote != netip.MustParseAddrPort("127.0.0.1:15001") {
			t.Errorf("app hop: remote %v, want the tunnel's 127.0.0.1:15001", ev.Remote)
		}
		if hop == HopTunnel && (ev.Remote != dst || ev.Local.Addr() != tp.pod4) {
			t.Errorf("tunnel hop: %v -> %v", ev.Local, ev.Remote)
		}
	}
	// Exactly two flows: nothing else (the relay's accepted socket) was recorded.
	select {
	case ev := <-events:
		if ev.Kind == FlowEnd {
			t.Errorf("unexpected flow: %+v", ev)
		}
	case <-time.After(200 * time.Millisecond):
	}
	// IPv6, the tunnel's hop.
	dst6 := netip.AddrPortFrom(tp.peer6, 8080)
	if got, err := transfer(tp.pod, dst6.String(), redirect.DefaultTunnelMark, 12345); err != nil || got != reply {
		t.Fatalf("transfer over IPv6: %d bytes, %v", got, err)
	}
	ev := waitFlow(t, events, "IPv6", endTo(dst6, HopTunnel))
	if ev.BytesSent != 12345 || ev.BytesReceived != reply || ev.SourceIP != tp.pod6 || ev.Local.Addr() != tp.pod6 || ev.Remote != dst6 {
		t.Errorf("IPv6: %v (pod %v) -> %v, sent %d, received %d", ev.Local, ev.SourceIP, ev.Remote, ev.BytesSent, ev.BytesReceived)
	}
	n, err := c.FlowTableEntries()
	if err != nil || n != 0 {
		t.Errorf("flow table: %d entries, %v; want 0 after close", n, err)
	}
}

// An app's connection to a Service's cluster IP (held here by the peer, as
// if it were the endpoint the tunnel picked) is named after the Service by
// the real PodIndex: destination namespace and Service, in the event, the
// stream's endpoint and the metrics, with no workload or identity.
func TestFlowServiceDestination(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	k := e.open(opts)
	tp := newTopo(t)
	vip := tp.peer4.Next().Next() // 10.77.n.4: neither end's address
	ip(t, "-n", tp.peerName, "addr", "add", vip.String()+"/32", "dev", "wq")
	ip(t, "-n", tp.podName, "route", "add", vip.String()+"/32", "via", tp.peer4.String(), "dev", "wp")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns-b", Name: "b"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: vip.String(), ClusterIPs: []string{vip.String()}}}
	idx, err := NewPodIndex(fake.NewClientset(kubePod("ns-a", "a-1", "uid-a", "n1", tp.pod4.String()), svc), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelIdx := context.WithCancel(context.Background())
	defer cancelIdx()
	if !idx.Run(ctx, 10*time.Second) {
		t.Fatal("index not synced")
	}
	c := e.openFlows(opts, idx)
	events, cancel := c.Subscribe(nil)
	defer cancel()
	enroll(t, k, tp.Pod("pod-a"))
	relay(t, tp.pod, k)
	sink(t, tp.peer, ":8080", 100)
	dst := netip.AddrPortFrom(vip, 8080)
	if got, err := transfer(tp.pod, dst.String(), 0, 1000); err != nil || got != 100 {
		t.Fatalf("transfer: %d bytes, %v", got, err)
	}
	ev := waitFlow(t, events, "app hop to the Service", endTo(dst, HopApp))
	want := PodMeta{Namespace: "ns-b", Service: "b"}
	if ev.DestinationPod != want || ev.SourcePod.Name != "a-1" {
		t.Errorf("source %+v, destination %+v; want %+v", ev.SourcePod, ev.DestinationPod, want)
	}
	if d := FlowEventProto("n1", &ev).GetDestination(); d.GetService() != "b" || d.GetNamespace() != "ns-b" || d.GetPod() != "" || d.GetIp() != vip.String() {
		t.Errorf("stream destination %v", d)
	}
	if !strings.Contains(exposition(t, reg), `warren_kernel_tcp_connections_total{destination_identity="unknown",destination_namespace="ns-b",destination_service="ns-b/b",destination_workload="unknown",end="closed",hop="app"`) {
		t.Errorf("no series for the Service\n%s", exposition(t, reg))
	}
}

// dropSome attaches a TCX ingress program to dev in ns that drops about one
// in eight packets longer than 200 bytes (data, not handshakes), for the
// test's life: packet loss without netem, which this kernel lacks.
func dropSome(tb testing.TB, ns *os.File, dev string) {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.SchedCLS,
		AttachType: ebpf.AttachTCXIngress,
		License:    "Apache-2.0",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // skb->len
			asm.JLT.Imm(asm.R2, 200, "pass"),
			asm.FnGetPrandomU32.Call(),
			asm.And.Imm(asm.R0, 7),
			asm.JNE.Imm(asm.R0, 0, "pass"),
			asm.Mov.Imm(asm.R0, 2), // TCX_DROP
			asm.Return(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("pass"), // TCX_PASS
			asm.Return(),
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prog.Close() })
	var l link.Link
	err = netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		return err
	})
	if err != nil {
		tb.Fatalf("tcx: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
}

// Packets lost on the way show up as retransmits, and the bytes are still
// counted once.
func TestFlowRetransmits(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	c := e.openFlows(opts, nil)
	events, cancel := c.Subscribe(nil)
	defer cancel()
	enroll(t, k, tp.Pod("pod-a"))
	sink(t, tp.peer, ":8080", 10)
	dst := netip.AddrPortFrom(tp.peer4, 8080)

	// Clean first: no retransmits. A CPU starved by other work can still
	// make TCP retransmit on a clean veth (a spurious timeout): up to three
	// tries for a transfer that shows the counter does not invent them.
	const send = 2_000_000
	var ev FlowEvent
	for try := 1; ; try++ {
		if _, err := transfer(tp.pod, dst.String(), redirect.DefaultTunnelMark, send); err != nil {
			t.Fatal(err)
		}
		ev = waitFlow(t, events, "clean", endTo(dst, HopTunnel))
		if ev.BytesSent != send {
			t.Fatalf("clean path: %d bytes sent, want %d", ev.BytesSent, send)
		}
		if ev.Retransmits == 0 {
			break
		}
		if try == 3 {
			t.Fatalf("clean path: %d retransmits in each of 3 transfers, want 0", ev.Retransmits)
		}
		t.Logf("clean path, try %d: %d retransmits (the machine is busy?); again", try, ev.Retransmits)
	}
	dropSome(t, tp.peer, "wq")
	// One segment per packet: with segmentation offload a packet the drop
	// program sees holds up to 64 KiB of segments, and how many it holds
	// depends on how busy the machine is (CI failed with 5 retransmits in
	// 1,395 segments). Single segments make the loss rate the program's.
	ip(t, "-n", tp.podName, "link", "set", "wp", "gso_max_size", "1500")
	if _, err := transfer(tp.pod, dst.String(), redirect.DefaultTunnelMark, send); err != nil {
		t.Fatal(err)
	}
	ev = waitFlow(t, events, "lossy", endTo(dst, HopTunnel))
	// About 1/8 of ~1400 data segments lost: about 170 retransmits, 10 is
	// far below any plausible draw.
	if ev.Retransmits < 10 || ev.BytesSent != send || ev.BytesReceived != 10 {
		t.Errorf("lossy path: %d retransmits (want >= 10), %d bytes sent, %d received; want %d, 10", ev.Retransmits, ev.BytesSent, ev.BytesReceived, send)
	}
	t.Logf("lossy path: %d segments out, %d retransmitted, srtt %v", ev.SegmentsSent, ev.Retransmits, ev.SRTT)
}

// Only this agent's enrolled netns are recorded: not another netns on the
// machine, not another agent's pods, not the peer's (passive) side, not the
// tunnel's delivery to its own pod's app.
func TestFlowOnlyEnrolled(t *testing.T) {
	e := newEnv(t)
	optsA, optsB := e.options("node-a"), e.options("node-b")
	ka, kb := e.open(optsA), e.open(optsB)
	ta, tb := newTopo(t), newTopo(t)
	other := newTopo(t)
	ca, cb := e.openFlows(optsA, nil), e.openFlows(optsB, nil)
	evA, cancelA := ca.Subscribe(nil)
	defer cancelA()
	evB, cancelB := cb.Subscribe(nil)
	defer cancelB()
	podA := ta.Pod("pod-a")
	podA.NodeIPs = []netip.Addr{ta.peer4} // so that the peer reaches the pod's own listener
	enroll(t, ka, podA)
	enroll(t, kb, tb.Pod("pod-b"))
	for _, tp := range []*topo{ta, tb, other} {
		sink(t, tp.peer, ":8080", 5)
		sink(t, tp.pod, ":8080", 5)
	}
	for _, c := range []struct {
		ns   *os.File
		addr netip.Addr
	}{
		{other.pod, other.peer4}, {other.peer, other.pod4}, // not enrolled anywhere
		{ta.peer, ta.pod4}, // into A's pod: its passive end
		{ta.pod, ta.pod4},  // the tunnel's (marked) dial to its own pod's app
		{tb.pod, tb.peer4}, // B's pod: B's flow
		{ta.pod, ta.peer4}, // A's pod, last
	} {
		if _, err := transfer(c.ns, netip.AddrPortFrom(c.addr, 8080).String(), redirect.DefaultTunnelMark, 100); err != nil {
			t.Fatal(err)
		}
	}
	a := waitFlow(t, evA, "A", func(e *FlowEvent) bool { return e.Kind == FlowEnd })
	if a.Destination != netip.AddrPortFrom(ta.peer4, 8080) {
		t.Errorf("agent A's first flow: %v -> %v, want its pod's only", a.Local, a.Destination)
	}
	b := waitFlow(t, evB, "B", func(e *FlowEvent) bool { return e.Kind == FlowEnd })
	if b.Destination != netip.AddrPortFrom(tb.peer4, 8080) {
		t.Errorf("agent B's first flow: %v -> %v, want its pod's only", b.Local, b.Destination)
	}
	for name, c := range map[string]*FlowCollector{"A": ca, "B": cb} {
		st, err := c.kernelStats()
		if err != nil {
			t.Fatal(err)
		}
		if st[0] != 1 || st[1] != 1 {
			t.Errorf("agent %s: %d flows started, %d ended; want 1, 1", name, st[0], st[1])
		}
	}
}

// 100k short connections: every flow leaves the table at its close, so the
// table never holds more than the connections open at once.
func TestFlowTableBounded(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	c := e.openFlows(opts, nil)
	enroll(t, k, tp.Pod("pod-a"))
	// The server closes first, so the clients' sockets never wait in TIME_WAIT.
	serve(t, tp.peer, "tcp", ":8080", func(net.Conn) string { return "" })
	const total, workers = 100_000, 4
	var (
		wg      sync.WaitGroup
		failed  atomic.Int64
		maxSeen atomic.Int64
		done    = make(chan struct{})
	)
	go func() { // sample the table while it runs
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if n, err := c.FlowTableEntries(); err == nil && int64(n) > maxSeen.Load() {
				maxSeen.Store(int64(n))
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One per worker: unix.Connect writes the raw address into it.
			sa := &unix.SockaddrInet4{Port: 8080, Addr: tp.peer4.As4()}
			netns.Do(tp.pod, func() error {
				buf := make([]byte, 16)
				for range total / workers {
					fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						failed.Add(1)
						continue
					}
					// The tunnel's mark: not redirected, recorded as the tunnel hop.
					unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, redirect.DefaultTunnelMark)
					if err := unix.Connect(fd, sa); err != nil {
						failed.Add(1)
					} else {
						for { // to the server's close
							n, err := unix.Read(fd, buf)
							if n <= 0 || err != nil {
								break
							}
						}
					}
					unix.Close(fd)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(done)
	if n := failed.Load(); n > total/100 {
		t.Fatalf("%d of %d connections failed", n, total)
	}
	waitFor(t, "an empty flow table", func() bool { n, err := c.FlowTableEntries(); return err == nil && n == 0 })
	st, err := c.kernelStats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d connections: %d flows started, %d ended, %d events dropped, %d untracked; at most %d in the table at once",
		total, st[0], st[1], st[2], st[3], maxSeen.Load())
	if st[0] < total-uint64(failed.Load()) || st[1] != st[0] || st[3] != 0 {
		t.Errorf("flows started %d, ended %d, untracked %d; want %d started, all ended", st[0], st[1], st[3], total)
	}
	if m := c.objs.Flows; m.Type() != ebpf.LRUHash || m.MaxEntries() != 65536 {
		t.Errorf("flow table: %v of %d entries, want an LRU hash of 65536: flows that never close are evicted", m.Type(), m.MaxEntries())
	}
	if maxSeen.Load() > 1000 {
		t.Errorf("the table held %d flows at once with %d connections in flight", maxSeen.Load(), workers)
	}
}

// delayedPair is two network namespaces joined by a TUN device in each and
// this process in between, which holds every packet for delay each way:
// real path delay without netem (not in this kernel), which TCP's RTT
// estimator sees as it would a longer wire. a is 10.78.<n>.1, b 10.78.<n>.2.
type delayedPair struct {
	a, b         *os.File
	aName        string
	aAddr, bAddr netip.Addr
}

func newDelayedPair(tb testing.TB, delay time.Duration) *delayedPair {
	tb.Helper()
	n := nsSeq.Add(1)
	p := &delayedPair{
		aName: fmt.Sprintf("wtest-%d-da%d", os.Getpid(), n),
		aAddr: netip.MustParseAddr(fmt.Sprintf("10.78.%d.1", n)),
		bAddr: netip.MustParseAddr(fmt.Sprintf("10.78.%d.2", n)),
	}
	bName := fmt.Sprintf("wtest-%d-db%d", os.Getpid(), n)
	p.a, p.b = addNetns(tb, p.aName), addNetns(tb, bName)
	tunA := openTun(tb, p.a, "wt0")
	tunB := openTun(tb, p.b, "wt0")
	for _, s := range []struct {
		ns          string
		local, peer netip.Addr
	}{{p.aName, p.aAddr, p.bAddr}, {bName, p.bAddr, p.aAddr}} {
		ip(tb, "-n", s.ns, "addr", "add", s.local.String(), "peer", s.peer.String(), "dev", "wt0")
		ip(tb, "-n", s.ns, "link", "set", "wt0", "up")
	}
	go forwardDelayed(tunA, tunB, delay)
	go forwardDelayed(tunB, tunA, delay)
	return p
}

func openTun(tb testing.TB, ns *os.File, name string) *os.File {
	tb.Helper()
	var f *os.File
	err := netns.Do(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	if err != nil {
		tb.Fatalf("tun in netns: %v", err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

// forwardDelayed copies packets from one TUN to the other, each written
// delay after it was read, in order.
func forwardDelayed(from, to *os.File, delay time.Duration) {
	type packet struct {
		due  time.Time
		data []byte
	}
	q := make(chan packet, 4096)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 65536)
			n, err := from.Read(buf)
			if err != nil {
				return
			}
			q <- packet{time.Now().Add(delay), buf[:n]}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.due))
		if _, err := to.Write(p.data); err != nil && errors.Is(err, os.ErrClosed) {
			return
		}
	}
}

// The RTT follows the path: 20 ms more each way, 40 ms more RTT.
func TestFlowRTT(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	c := e.openFlows(opts, nil)
	events, cancel := c.Subscribe(nil)
	defer cancel()
	rtt := map[time.Duration]FlowEvent{}
	for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
		p := newDelayedPair(t, delay)
		enroll(t, k, Pod{UID: fmt.Sprintf("pod-delay-%d", delay.Milliseconds()), Netns: filepath.Join(netns.RunDir, p.aName), IPs: []netip.Addr{p.aAddr}})
		sink(t, p.b, ":8080", 100_000)
		dst := netip.AddrPortFrom(p.bAddr, 8080)
		if _, err := transfer(p.a, dst.String(), redirect.DefaultTunnelMark, 100_000); err != nil {
			t.Fatal(err)
		}
		rtt[delay] = waitFlow(t, events, delay.String(), endTo(dst, HopTunnel))
	}
	base, slow := rtt[0], rtt[20*time.Millisecond]
	t.Logf("srtt %v (min %v) direct, %v (min %v) with 2 x 20 ms", base.SRTT, base.MinRTT, slow.SRTT, slow.MinRTT)
	// The minimum RTT is the path's (the forwarder's scheduling on a busy
	// machine only adds to it); the smoothed one follows it up.
	if base.SRTT <= 0 || base.MinRTT > 10*time.Millisecond {
		t.Errorf("without delay: srtt %v, min %v; want min < 10 ms", base.SRTT, base.MinRTT)
	}
	if slow.MinRTT < 40*time.Millisecond || slow.MinRTT > 60*time.Millisecond+base.MinRTT || slow.SRTT < 40*time.Millisecond {
		t.Errorf("with 20 ms each way: srtt %v, min %v; want min 40 ms + about the direct min (%v), srtt >= 40 ms", slow.SRTT, slow.MinRTT, base.MinRTT)
	}
}

// A restarted agent adopts the pinned program and flow table: a connection
// open across the restart still ends with its full counts. Uninstall then
// detaches the program and removes its pins, and leaves redirection alone.
func TestFlowAdoptAndUninstall(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	c1 := e.openFlows(opts, nil)
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	sink(t, tp.peer, ":8081", 7)
	dst := netip.AddrPortFrom(tp.peer4, 8081)

	// A connection opened under the first collector...
	var conn net.Conn
	err := netns.Do(tp.pod, func() (err error) {
		d := markedDialer(redirect.DefaultTunnelMark)
		conn, err = d.Dial("tcp", dst.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	// ...ends under the second.
	opts.Registerer = nil
	c2 := e.openFlows(opts, nil)
	events, cancel := c2.Subscribe(nil)
	defer cancel()
	if _, err := conn.Write(make([]byte, 234)); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, conn)
	conn.Close()
	ev := waitFlow(t, events, "across the restart", endTo(dst, HopTunnel))
	if ev.BytesSent != 1234 || ev.BytesReceived != 7 || ev.Start.After(ev.Established) {
		t.Errorf("flow across the restart: sent %d, received %d, start %v, established %v; want 1234, 7", ev.BytesSent, ev.BytesReceived, ev.Start, ev.Established)
	}
	pin := filepath.Join(c2.opts.PinDir, linksDir, flowsLinkName)
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	li, _ := l.Info()
	l.Close()
	pi, _ := c2.objs.WarrenFlows.Info()
	if id, _ := pi.ID(); li.Program != id {
		t.Errorf("link runs program %d, want the second collector's %d", li.Program, id)
	}

	if err := c2.Uninstall(); err != nil {
		t.Fatal(err)
	}
	for _, name := range append([]string{filepath.Join(linksDir, flowsLinkName)}, flowOwnMaps...) {
		if _, err := os.Stat(filepath.Join(c2.opts.PinDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still pinned after uninstall: %v", name, err)
		}
	}
	waitFor(t, "the flow program detached", func() bool {
		for _, id := range e.stillAttached() {
			if pid, _ := pi.ID(); id == pid {
				return false
			}
		}
		return true
	})
	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectFail(t, "redirected with no tunnel, after the flows' uninstall", got, err) // fail closed: redirection stays
}

// The metrics count by workload and pass promtool's checks.
func TestFlowMetrics(t *testing.T) {
	e := newEnv(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found (Debian package prometheus; make deps)")
	}
	opts := e.options("n1")
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	k := e.open(opts)
	tp := newTopo(t)
	pods := staticPods{
		tp.pod4:  {Namespace: "ns-a", Name: "a-1", Workload: "a", ServiceAccount: "sa-a"},
		tp.peer4: {Namespace: "ns-b", Name: "b-1", Workload: "b"},
	}
	c := e.openFlows(opts, pods)
	events, cancel := c.Subscribe(nil)
	defer cancel()
	enroll(t, k, tp.Pod("pod-a"))
	sink(t, tp.peer, ":8080", 20)
	dst := netip.AddrPortFrom(tp.peer4, 8080)
	for range 3 {
		if _, err := transfer(tp.pod, dst.String(), redirect.DefaultTunnelMark, 1000); err != nil {
			t.Fatal(err)
		}
		waitFlow(t, events, "flow", endTo(dst, HopTunnel))
	}
	// Refused: nothing listens on 9999.
	transfer(tp.pod, netip.AddrPortFrom(tp.peer4, 9999).String(), redirect.DefaultTunnelMark, 1)
	waitFlow(t, events, "refused", endTo(netip.AddrPortFrom(tp.peer4, 9999), HopTunnel))

	l := prometheus.Labels{"hop": "tunnel",
		"source_workload": "a", "source_namespace": "ns-a", "source_identity": "spiffe://cluster.local/ns/ns-a/sa/sa-a",
		"destination_workload": "b", "destination_namespace": "ns-b", "destination_identity": "spiffe://cluster.local/ns/ns-b/sa/default",
		"destination_service": "unknown"}
	with := func(k, v string) prometheus.Labels {
		out := prometheus.Labels{k: v}
		for k, v := range l {
			out[k] = v
		}
		return out
	}
	m := c.metrics
	for what, got := range map[string][2]float64{
		"bytes sent":                          {testutil.ToFloat64(m.bytes.With(with("direction", "sent"))), 3000},
		"bytes received":                      {testutil.ToFloat64(m.bytes.With(with("direction", "received"))), 60},
		"connections closed":                  {testutil.ToFloat64(m.connections.With(with("end", "closed"))), 3},
		"connections failed":                  {testutil.ToFloat64(m.connections.With(with("end", "failed"))), 1},
		"retransmits":                         {testutil.ToFloat64(m.retrans.With(l)), 0},
		"rtt series":                          {float64(testutil.CollectAndCount(m.rtt)), 1},
		"flow events read (3 starts, 4 ends)": {testutil.ToFloat64(m.events.WithLabelValues("read")), 7},
	} {
		if got[0] != got[1] {
			t.Errorf("%s: %v, want %v", what, got[0], got[1])
		}
	}
	if !strings.Contains(exposition(t, reg), `warren_kernel_tcp_rtt_seconds_count{destination_identity="spiffe://cluster.local/ns/ns-b/sa/default",destination_namespace="ns-b",destination_service="unknown",destination_workload="b",hop="tunnel",source_identity="spiffe://cluster.local/ns/ns-a/sa/sa-a",source_namespace="ns-a",source_workload="a"} 3`) {
		t.Errorf("rtt: want 3 observations (the failed connection has no RTT)\n%s", exposition(t, reg))
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition(t, reg))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// exposition is the registry as /metrics serves it (text format).
func exposition(tb testing.TB, reg *prometheus.Registry) string {
	tb.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// A connection open when its pod leaves the mesh still ends with its counts,
// and the flow table is left empty.
func TestFlowEndsAfterUnenroll(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	tp := newTopo(t)
	c := e.openFlows(opts, nil)
	events, cancel := c.Subscribe(nil)
	defer cancel()
	enroll(t, k, tp.Pod("pod-a"))
	sink(t, tp.peer, ":8080", 3)
	dst := netip.AddrPortFrom(tp.peer4, 8080)
	var conn net.Conn
	err := netns.Do(tp.pod, func() (err error) {
		d := markedDialer(redirect.DefaultTunnelMark)
		conn, err = d.Dial("tcp", dst.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFlow(t, events, "start", func(e *FlowEvent) bool { return e.Kind == FlowStart && e.Destination == dst })
	if err := k.Unenroll(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	conn.Write(make([]byte, 42))
	conn.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, conn)
	conn.Close()
	ev := waitFlow(t, events, "end after unenroll", endTo(dst, HopTunnel))
	if ev.BytesSent != 42 || ev.BytesReceived != 3 || ev.End != EndClosed {
		t.Errorf("end after unenroll: %d sent, %d received, %q; want 42, 3, closed", ev.BytesSent, ev.BytesReceived, ev.End)
	}
	if n, err := c.FlowTableEntries(); err != nil || n != 0 {
		t.Errorf("flow table: %d, %v", n, err)
	}
}
