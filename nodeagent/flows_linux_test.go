package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
		d := net.Dialer{Timeout: 5 * time.Second}
		if mark != 0 {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) })
				return errors.Join(err, serr)
			}
		}
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
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				orig, err := k.OrigDst(c.(*net.TCPConn))
				if err != nil {
					return
				}
				var up net.Conn
				err = netns.Do(ns, func() (err error) {
					d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
						return rc.Control(func(fd uintptr) {
							unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, DefaultTunnelMark)
						})
					}}
					up, err = d.Dial("tcp", orig.String())
					return err
				})
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
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
	n, err := c.FlowTableEntries()
	if err != nil || n != 0 {
		t.Errorf("flow table: %d entries, %v; want 0 after close", n, err)
	}
}
