package nodeagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/netns"
)

// abBlocks times run in two setups, A and B, in blocks that alternate
// A B B A in each iteration, so that whatever else loads a shared machine
// falls on both alike; switching setups is not timed. It reports each
// setup's mean per operation (block operations per run) and how much slower
// B is than A: over the totals, and as the median of the per-iteration ratios.
func abBlocks(b *testing.B, block int, run func() (time.Duration, error), setA, setB func() error, nameA, nameB string) error {
	var totalA, totalB time.Duration
	var ratios []float64
	for b.Loop() {
		var da, db time.Duration
		for _, useB := range []bool{false, true, true, false} {
			b.StopTimer()
			set := setA
			if useB {
				set = setB
			}
			if err := set(); err != nil {
				return err
			}
			b.StartTimer()
			d, err := run()
			if err != nil {
				return err
			}
			if useB {
				db += d
			} else {
				da += d
			}
		}
		totalA += da
		totalB += db
		ratios = append(ratios, float64(db)/float64(da))
	}
	slices.Sort(ratios)
	n := float64(2 * block * len(ratios))
	b.ReportMetric(float64(totalA.Nanoseconds())/n, "ns/"+nameA)
	b.ReportMetric(float64(totalB.Nanoseconds())/n, "ns/"+nameB)
	b.ReportMetric(100*(float64(totalB)/float64(totalA)-1), "%slower")
	b.ReportMetric(100*(ratios[len(ratios)/2]-1), "%slower-median")
	return nil
}

// connectBlock opens block connections to sa from the current thread's
// netns, reading one byte from each when read is set, and closes each with
// a reset (no TIME_WAIT to run out of ports with).
func connectBlock(sa unix.Sockaddr, block int, read bool) (time.Duration, error) {
	buf := make([]byte, 64)
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
		if read {
			if _, err := unix.Read(fd, buf); err != nil {
				unix.Close(fd)
				return 0, err
			}
		}
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}
	return time.Since(start), nil
}

// BenchmarkConnect measures connect()+close() on loopback in a netns that is
// not enrolled, with no programs at the cgroup2 root and with the agent's
// connect4, connect6 and sockops attached there (and a pod enrolled
// elsewhere): what the programs cost everyone else on the node. The
// dataplane is loaded once, attached to a cgroup of its own where it acts on
// nobody; for the attached blocks, links of its programs are made at the
// root, and closed after:
//
//	go test -run XXX -bench Connect -benchtime 50x ./nodeagent
func BenchmarkConnect(b *testing.B) {
	const block = 500
	e := newEnv(b)
	tp := newTopo(b)
	elsewhere := newTopo(b)
	root, err := Cgroup2Root()
	if err != nil {
		b.Fatal(err)
	}
	own := filepath.Join(root, fmt.Sprintf("warren-bench-%d", os.Getpid()))
	if err := os.Mkdir(own, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.Remove(own) })
	opts := e.options("bench")
	opts.Cgroup = own
	k := e.open(opts)
	enroll(b, k, elsewhere.Pod("elsewhere"))
	ln := serve(b, tp.pod, "tcp4", "127.0.0.1:0", func(net.Conn) string { return "" })
	sa := &unix.SockaddrInet4{Port: ln.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}

	var links []link.Link
	detach := func() error {
		for _, l := range links {
			if err := l.Close(); err != nil {
				return err
			}
		}
		links = nil
		return nil
	}
	b.Cleanup(func() { detach() })
	attach := func() error {
		if err := detach(); err != nil {
			return err
		}
		for _, a := range []struct {
			prog   *ebpf.Program
			attach ebpf.AttachType
		}{
			{k.objs.WarrenConnect4, ebpf.AttachCGroupInet4Connect},
			{k.objs.WarrenConnect6, ebpf.AttachCGroupInet6Connect},
			{k.objs.WarrenSockops, ebpf.AttachCGroupSockOps},
		} {
			l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: a.attach, Program: a.prog})
			if err != nil {
				return err
			}
			links = append(links, l)
		}
		return nil
	}
	err = netns.Do(tp.pod, func() error {
		return abBlocks(b, block, func() (time.Duration, error) { return connectBlock(sa, block, false) },
			detach, attach, "connect-none", "connect-attached")
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := detach(); err != nil {
		b.Fatal(err)
	}

	// The same connections, untimed, with the kernel's run statistics on and
	// this process moved into the dataplane's own cgroup, so that the
	// programs there run for these connections and nothing else's: their
	// CPU time per connection, which a loaded machine does not blur.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	progs := []*ebpf.Program{k.objs.WarrenConnect4, k.objs.WarrenConnect6, k.objs.WarrenSockops}
	total := func() (time.Duration, uint64) {
		var d time.Duration
		var n uint64
		for _, p := range progs {
			s, err := p.Stats()
			if err != nil {
				b.Fatal(err)
			}
			d, n = d+s.Runtime, n+s.RunCount
		}
		return d, n
	}
	from, err := ownCgroup(root)
	if err != nil {
		b.Fatal(err)
	}
	moveTo := func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0)
	}
	if err := moveTo(own); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := moveTo(from); err != nil {
			b.Errorf("back to cgroup %s: %v", from, err)
		}
	}()
	const statBlock = 4 * block
	d0, n0 := total()
	err = netns.Do(tp.pod, func() error { _, err := connectBlock(sa, statBlock, false); return err })
	if err != nil {
		b.Fatal(err)
	}
	d1, n1 := total()
	b.ReportMetric(float64((d1-d0).Nanoseconds())/statBlock, "ns-in-programs/connect")
	b.ReportMetric(float64(n1-n0)/statBlock, "program-runs/connect")
}

// ownCgroup is the cgroup2 directory this process is in.
func ownCgroup(root string) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(root, p), nil
		}
	}
	return "", errors.New("no cgroup2 line in /proc/self/cgroup")
}

// BenchmarkFirstByte measures connect and first byte from a pod netns to a
// peer: directly (pod not enrolled) and redirected through a stand-in tunnel
// on 127.0.0.1:15001 that looks up the original destination and answers
// itself (no onward dial: the redirection's own cost, not a proxy's).
// Blocks alternate as in BenchmarkConnect; the pod is enrolled and
// unenrolled between them.
func BenchmarkFirstByte(b *testing.B) {
	const block = 250
	e := newEnv(b)
	tp := newTopo(b)
	serve(b, tp.peer, "tcp4", ":8080", func(net.Conn) string { return "" })
	k := e.open(e.options("bench"))
	tunnel(b, tp.pod, k.OrigDst)
	dst := netip.AddrPortFrom(tp.peer4, 8080)
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	err := netns.Do(tp.pod, func() error {
		return abBlocks(b, block, func() (time.Duration, error) { return connectBlock(sa, block, true) },
			func() error { return k.Unenroll(ctx, "pod") },
			func() error { return k.Enroll(ctx, tp.Pod("pod")) },
			"conn-direct", "conn-redirected")
	})
	if err != nil {
		b.Fatal(err)
	}
}
