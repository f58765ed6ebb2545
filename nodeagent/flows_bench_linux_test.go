package nodeagent

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/bpf/flows"
	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/bpf/redirect/pins"
	"github.com/warrenmesh/warren/internal/netns"
)

// BenchmarkFlows measures what the flow program (and its collector reading
// the ring buffer) costs an enrolled pod's connections: connect rate (connect,
// read the server's close, close) and bulk throughput (64 MiB on one
// connection), from an enrolled pod to a peer over a veth, the redirect
// programs attached in both arms. Each iteration times a block without the
// flow program and a block with it (attached and uninstalled between
// blocks, untimed), the arms taking turns to go first, so both see the
// same load. The kernel's own account of the flow program's run time
// (BPF_STATS_RUN_TIME, on for the benchmark) gives its cost apart from that
// noise: ns/conn-in-prog, and %time-in-prog of the time without it.
//
//	go test -run XXX -bench Flows -benchtime 10x ./nodeagent
func BenchmarkFlows(b *testing.B) {
	const (
		block = 1000
		bulk  = 64 << 20
	)
	e := newEnv(b)
	opts := e.options("bench")
	k := e.open(opts)
	tp := newTopo(b)
	if err := k.Enroll(ctx, tp.Pod("pod")); err != nil {
		b.Fatal(err)
	}
	// The connect server answers on a thread of its own with plain
	// syscalls, so that Go's scheduling of the collector next to it
	// weighs less than it would on the benchmark's few cores.
	var lfd int
	err := netns.Do(tp.peer, func() (err error) {
		if lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(lfd, &unix.SockaddrInet4{Port: 8080}); err != nil {
			return err
		}
		return unix.Listen(lfd, 4096)
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Shutdown(lfd, unix.SHUT_RDWR); unix.Close(lfd) })
	go func() {
		runtime.LockOSThread() // dies with the goroutine: never back in the pool
		for {
			fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err != nil {
				if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
					continue
				}
				return
			}
			unix.Write(fd, []byte("\n"))
			unix.Close(fd)
		}
	}()
	var ln net.Listener
	if err := netns.Do(tp.peer, func() (err error) { ln, err = net.Listen("tcp4", ":8081"); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	dst := netip.AddrPortFrom(tp.peer4, 8080)
	var (
		connNone, connFlows, bulkNone, bulkFlows time.Duration
		progTime                                 time.Duration // the flow program's own, in the kernel
		progRuns                                 uint64
	)
	// The kernel's run time of each program: what the flow program itself
	// costs, which the wall-clock arms measure only through the noise of a
	// shared machine.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	err = netns.Do(tp.pod, func() error {
		// The tunnel's mark: a recorded connection (tunnel hop) that
		// needs no tunnel to stand in for.
		socket := func() (int, error) {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return -1, err
			}
			return fd, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, redirect.DefaultTunnelMark)
		}
		buf := make([]byte, 1<<16)
		connect := func() (time.Duration, error) {
			sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
			start := time.Now()
			for range block {
				fd, err := socket()
				if err != nil {
					return 0, err
				}
				if err := unix.Connect(fd, sa); err != nil {
					unix.Close(fd)
					return 0, err
				}
				if _, err := unix.Read(fd, buf); err != nil { // the server's line
					unix.Close(fd)
					return 0, err
				}
				// RST on close: no TIME_WAIT on either side to slow the next block.
				unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				unix.Close(fd)
			}
			return time.Since(start), nil
		}
		send := func() (time.Duration, error) {
			sa := &unix.SockaddrInet4{Port: 8081, Addr: dst.Addr().As4()}
			start := time.Now()
			fd, err := socket()
			if err != nil {
				return 0, err
			}
			defer unix.Close(fd)
			if err := unix.Connect(fd, sa); err != nil {
				return 0, err
			}
			for sent := 0; sent < bulk; {
				n, err := unix.Write(fd, buf)
				if err != nil {
					return 0, err
				}
				sent += n
			}
			unix.Shutdown(fd, unix.SHUT_WR)
			unix.Read(fd, buf[:1]) // the sink's close: everything was received
			return time.Since(start), nil
		}
		both := func(conn, bulk *time.Duration) error {
			d, err := connect()
			if err != nil {
				return err
			}
			*conn += d
			if d, err = send(); err != nil {
				return err
			}
			*bulk += d
			return nil
		}
		withFlows := func() error {
			b.StopTimer()
			o := opts
			o.Registerer = nil
			c, err := OpenFlows(FlowOptions{Options: o})
			if err != nil {
				return err
			}
			rctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(rctx) }()
			b.StartTimer()
			err = both(&connFlows, &bulkFlows)
			b.StopTimer()
			cancel()
			<-done
			if st, serr := c.objs.WarrenFlows.Stats(); serr == nil {
				progTime += st.Runtime
				progRuns += st.RunCount
			}
			if uerr := c.Uninstall(); err == nil {
				err = uerr
			}
			b.StartTimer()
			return err
		}
		// Arms alternate which goes first, so neither always follows the other.
		for i := 0; b.Loop(); i++ {
			first, second := func() error { return both(&connNone, &bulkNone) }, withFlows
			if i%2 == 1 {
				first, second = second, first
			}
			if err := first(); err != nil {
				return err
			}
			if err := second(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	n := float64(b.N)
	b.ReportMetric(float64(connNone.Nanoseconds())/n/block, "ns/conn-none")
	b.ReportMetric(float64(connFlows.Nanoseconds())/n/block, "ns/conn-flows")
	b.ReportMetric(100*(float64(connFlows)/float64(connNone)-1), "%conn-slower")
	conns := n * (block + 1)
	b.ReportMetric(float64(progTime.Nanoseconds())/conns, "ns/conn-in-prog")
	b.ReportMetric(float64(progRuns)/conns, "runs/conn")
	b.ReportMetric(100*float64(progTime)/float64(connNone+bulkNone), "%time-in-prog")
	b.ReportMetric(bulk*n/bulkNone.Seconds()/1e6, "MB/s-none")
	b.ReportMetric(bulk*n/bulkFlows.Seconds()/1e6, "MB/s-flows")
	b.ReportMetric(100*(float64(bulkFlows)/float64(bulkNone)-1), "%bulk-slower")
}

// BenchmarkFlowEvent measures what the collector does with one end event in
// user space: decode, resolve, count, fan out (to no subscriber).
func BenchmarkFlowEvent(b *testing.B) {
	pods := staticPods{
		netip.MustParseAddr("10.77.1.1"): {Namespace: "ns-a", Name: "a-1", Workload: "a", ServiceAccount: "sa-a"},
		netip.MustParseAddr("10.77.1.2"): {Namespace: "ns-b", Name: "b-1", Workload: "b"},
	}
	c := &FlowCollector{metrics: newFlowMetrics(), opts: FlowOptions{Pods: pods, TrustDomain: "cluster.local"}}
	var raw flows.FlowsFlowEvent
	raw.Kind = uint8(flows.FlowsFlowKindFLOW_END)
	raw.Hop = uint8(flows.FlowsFlowHopHOP_TUNNEL)
	raw.PodIp4 = 0x01014d0a // 10.77.1.1
	raw.Remote = flows.FlowsAddr{Ip6: pins.Words(netip.MustParseAddr("::ffff:10.77.1.2").As16()), Port: 8080}
	raw.EstablishedNs, raw.StartNs, raw.TimeNs = 1, 1, 2
	buf := make([]byte, binary.Size(raw))
	if _, err := binary.Encode(buf, binary.LittleEndian, &raw); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r := *(*flows.FlowsFlowEvent)(unsafe.Pointer(&buf[0])) // as Run reads it
		ev := c.event(&r)
		c.metrics.observe(&ev)
		c.hub.publish(&ev)
	}
}
