package nodeagent

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/netns"
)

// BenchmarkConnect measures connect()+close() on loopback in a netns that is
// not enrolled, with no programs attached and with the dataplane attached at
// the cgroup2 root (and a pod enrolled elsewhere): what the programs cost
// everyone else on the node. Each iteration times a block of connections
// without, then a block with, the programs (attached and uninstalled between
// blocks, untimed), so that both see the same load on a shared machine:
//
//	go test -run XXX -bench Connect -benchtime 20x ./nodeagent
func BenchmarkConnect(b *testing.B) {
	const block = 2000
	e := newEnv(b)
	tp := newTopo(b)
	elsewhere := newTopo(b)
	ln := serve(b, tp.pod, "tcp4", "127.0.0.1:0", func(net.Conn) string { return "" })
	port := ln.Addr().(*net.TCPAddr).Port
	var none, attached time.Duration
	err := netns.Do(tp.pod, func() error {
		sa := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
		run := func() (time.Duration, error) {
			start := time.Now()
			for range block {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return 0, err
				}
				if err := unix.Connect(fd, sa); err != nil {
					unix.Close(fd)
					return 0, err
				}
				// RST on close: no TIME_WAIT to run out of ports with.
				unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				unix.Close(fd)
			}
			return time.Since(start), nil
		}
		for b.Loop() {
			d, err := run()
			if err != nil {
				return err
			}
			none += d
			b.StopTimer()
			k, err := Open(ctx, e.options("bench"))
			if err != nil {
				return err
			}
			if err := k.Enroll(ctx, elsewhere.Pod("elsewhere")); err != nil {
				return err
			}
			b.StartTimer()
			d, err = run()
			if err != nil {
				return err
			}
			attached += d
			b.StopTimer()
			if err := k.Uninstall(ctx); err != nil {
				return err
			}
			b.StartTimer()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	n := float64(b.N * block)
	b.ReportMetric(float64(none.Nanoseconds())/n, "ns/connect-none")
	b.ReportMetric(float64(attached.Nanoseconds())/n, "ns/connect-attached")
	b.ReportMetric(100*(float64(attached)/float64(none)-1), "%slower")
}

// BenchmarkFirstByte measures connect and first byte from a pod netns to a
// peer: directly (pod not enrolled) and redirected through a stand-in tunnel
// on 127.0.0.1:15001 that looks up the original destination and answers
// itself (no onward dial: the redirection's own cost, not a proxy's).
// Blocks alternate in each iteration, as in BenchmarkConnect.
func BenchmarkFirstByte(b *testing.B) {
	const block = 1000
	e := newEnv(b)
	tp := newTopo(b)
	serve(b, tp.peer, "tcp4", ":8080", func(net.Conn) string { return "" })
	k := e.open(e.options("bench"))
	tunnel(b, tp.pod, k.OrigDst)
	dst := netip.AddrPortFrom(tp.peer4, 8080)
	var direct, redirected time.Duration
	err := netns.Do(tp.pod, func() error {
		sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
		buf := make([]byte, 64)
		run := func() (time.Duration, error) {
			start := time.Now()
			for range block {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return 0, err
				}
				if err := unix.Connect(fd, sa); err != nil {
					unix.Close(fd)
					return 0, err
				}
				if _, err := unix.Read(fd, buf); err != nil {
					unix.Close(fd)
					return 0, err
				}
				unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				unix.Close(fd)
			}
			return time.Since(start), nil
		}
		for b.Loop() {
			d, err := run()
			if err != nil {
				return err
			}
			direct += d
			b.StopTimer()
			if err := k.Enroll(ctx, tp.Pod("pod")); err != nil {
				return err
			}
			b.StartTimer()
			if d, err = run(); err != nil {
				return err
			}
			redirected += d
			b.StopTimer()
			if err := k.Unenroll(ctx, "pod"); err != nil {
				return err
			}
			b.StartTimer()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	n := float64(b.N * block)
	b.ReportMetric(float64(direct.Nanoseconds())/n, "ns/conn-direct")
	b.ReportMetric(float64(redirected.Nanoseconds())/n, "ns/conn-redirected")
	b.ReportMetric(100*(float64(redirected)/float64(direct)-1), "%slower")
}
