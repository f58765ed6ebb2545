package ztunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/nodeagent"
)

// helperEnv, when set, makes TestZtunnelProcess run a node1 ztunnel (the
// JSON helperArgs it holds) until it is killed: a ztunnel in a process of
// its own, for a test to SIGKILL.
const helperEnv = "WARREN_ZTUNNEL_HELPER"

type helperArgs struct {
	Names              map[string]string
	Bundle             string
	Certs              map[string]CertPair
	PinDir             string
	MetricsAddr, Ready string
}

// TestZtunnelProcess is not a test: see helperEnv.
func TestZtunnelProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		t.Skip("runs only as another test's ztunnel process")
	}
	var a helperArgs
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		t.Fatal(err)
	}
	cfg, _ := mesh(&testNet{names: a.Names}, a.Bundle, a.Certs)
	cfg.PinDir, cfg.MetricsAddr, cfg.ReadyAddr = a.PinDir, a.MetricsAddr, a.Ready
	tun, err := New(cfg, Options{Logger: testLogger(t, "node1-process"), DrainGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := tun.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type ztunnelProcess struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	metrics string // its /metrics address
}

// startProcess runs node1's ztunnel in a process of its own (TestZtunnelProcess)
// and waits until it is ready.
func startProcess(t *testing.T, n *testNet, bundle string, certs map[string]CertPair, pinDir string) *ztunnelProcess {
	t.Helper()
	// Its node ports on a loopback address of this test's own: they set
	// SO_REUSEPORT, so a port another test holds on 127.0.0.1 (a free port
	// picked, then bound later) would be shared rather than refused.
	host := fmt.Sprintf("127.78.%d.%d", os.Getpid()>>8&0xff, os.Getpid()&0xff)
	a := helperArgs{Names: n.names, Bundle: bundle, Certs: certs, PinDir: pinDir,
		MetricsAddr: host + ":15020", Ready: host + ":15021"}
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestZtunnelProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("ztunnel process output:\n%s", out.String())
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("ztunnel process exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ztunnel process not ready: %s", out.String())
		}
		if resp, err := http.Get("http://" + a.Ready + "/healthz/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &ztunnelProcess{cmd: cmd, exited: exited, metrics: a.MetricsAddr}
			}
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// counter sums a counter's series that carry labels, from a registry or a
// /metrics address (text format).
func counter(t *testing.T, src any, name string, labels map[string]string) float64 {
	t.Helper()
	type sample struct {
		labels map[string]string
		value  float64
	}
	var samples []sample
	switch s := src.(type) {
	case *prometheus.Registry:
		mfs, err := s.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				got := map[string]string{}
				for _, lp := range m.GetLabel() {
					got[lp.GetName()] = lp.GetValue()
				}
				samples = append(samples, sample{got, m.GetCounter().GetValue()})
			}
		}
	case string:
		resp, err := http.Get("http://" + s + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			m := sampleLine.FindStringSubmatch(sc.Text())
			if m == nil || m[1] != name {
				continue
			}
			got := map[string]string{}
			for _, kv := range labelPair.FindAllStringSubmatch(m[2], -1) {
				got[kv[1]] = kv[2]
			}
			v, err := strconv.ParseFloat(m[3], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", sc.Text(), err)
			}
			samples = append(samples, sample{got, v})
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	var sum float64
sample:
	for _, sm := range samples {
		for k, v := range labels {
			if sm.labels[k] != v {
				continue sample
			}
		}
		sum += sm.value
	}
	return sum
}

// A sample line of the Prometheus text format, and a label in it (the
// ztunnel's label values hold no quotes or backslashes).
var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"`)
)

// load opens connections in a loop, each carrying the marker both ways,
// until stop; it counts what worked and keeps what failed.
type load struct {
	n        *testNet
	ok, fail atomic.Int64
	mu       sync.Mutex
	errs     []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func (l *load) run(role string, dst netip.AddrPort) {
	l.wg.Go(func() {
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			if _, err := l.n.exchange(role, dst); err != nil {
				l.fail.Add(1)
				l.mu.Lock()
				l.errs = append(l.errs, fmt.Sprintf("%s -> %v at %s: %v", role, dst, time.Now().Format("15:04:05.000"), err))
				l.mu.Unlock()
			} else {
				l.ok.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
}

// TestHandover replaces node1's ztunnel by another under a steady load of
// new connections both ways through it (outbound from its client pod, and
// inbound over HBONE from node2's server pod): none may fail, a connection
// open across the switch keeps working while the old ztunnel drains, and
// once it has exited the new one serves. Then the new one, now the only
// ztunnel, is killed (SIGKILL): the pod's connections fail, and none of its
// payloads crossed the link in plaintext, across all of it.
func TestHandover(t *testing.T) {
	requireKernel(t)
	dir := t.TempDir()
	bpffs := filepath.Join(dir, "bpffs")
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount %s: %v", bpffs, err)
		}
	})
	n := newTestNet(t)
	ca, certs := meshCA(t, dir, "demo/client", "demo/server")
	n.echoServer("server", appPort)
	n.echoServer("client", appPort)
	n.echoServer("outsider", appPort)

	pcap := filepath.Join(dir, "link.pcap")
	dump := exec.Command("ip", "netns", "exec", n.names["node1"], "tcpdump", "-i", "to-node2", "-U", "--immediate-mode", "-s", "0", "-w", pcap, "tcp")
	var dumpErr syncBuffer
	dump.Stderr = &dumpErr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	stopDump := sync.OnceFunc(func() {
		time.Sleep(200 * time.Millisecond) // -U: let the last packets reach the file
		dump.Process.Signal(unix.SIGTERM)
		dump.Wait()
	})
	t.Cleanup(stopDump)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(dumpErr.String(), "listening on"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start: %s", dumpErr.String())
		}
	}

	cfg1, cfg2 := mesh(n, ca.Bundle, certs)
	startNode(t, n, bpffs, "node2", cfg2)
	// node1: its agent's dataplane, and its first ztunnel in this process.
	k, err := nodeagent.Open(context.Background(), nodeagent.Options{Node: "node1", BPFFS: bpffs, Logger: testLogger(t, "node1-agent")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall node1: %v", err)
		}
	})
	for _, p := range cfg1.Pods {
		if err := k.Enroll(context.Background(), nodeagent.Pod{UID: p.UID, Netns: p.Netns, IPs: p.IPs}); err != nil {
			t.Fatal(err)
		}
	}
	pinDir := filepath.Join(bpffs, "warren", "node1")
	cfg1.PinDir = pinDir
	const grace = 2 * time.Second
	reg1 := prometheus.NewRegistry()
	old, err := New(cfg1, Options{Logger: testLogger(t, "node1-old"), Registry: reg1, DrainGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	oldDone := make(chan error, 1)
	go func() { oldDone <- old.Run(ctx) }()
	oldExited := make(chan struct{})
	stopOld := sync.OnceFunc(func() {
		cancel()
		if err := <-oldDone; err != nil {
			t.Errorf("old ztunnel: %v", err)
		}
		close(oldExited)
	})
	t.Cleanup(stopOld)
	for deadline := time.Now().Add(10 * time.Second); !old.ready.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("old ztunnel not ready")
		}
	}

	// Plaintext that crosses the link by design: the capture sees payloads.
	if _, err := n.exchange("outsider", netip.AddrPortFrom(serverIP, appPort)); err != nil {
		t.Fatal(err)
	}
	outbound := netip.AddrPortFrom(serverIP, appPort) // client (node1) -> server (node2)
	inbound := netip.AddrPortFrom(clientIP, appPort)  // server (node2) -> client (node1)
	for _, c := range []struct {
		role string
		dst  netip.AddrPort
	}{{"client", outbound}, {"server", inbound}} {
		if _, err := n.exchange(c.role, c.dst); err != nil {
			t.Fatalf("%s -> %v before the handover: %v", c.role, c.dst, err)
		}
	}
	// A connection open across the handover, served by the old ztunnel.
	long, err := n.dial("client", outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	longR := bufio.NewReader(long)
	longLine := func() error {
		long.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(long, "%s\n", marker); err != nil {
			return err
		}
		line, err := longR.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "hello") {
			if line, err = longR.ReadString('\n'); err != nil {
				return err
			}
		}
		if line != marker+"\n" {
			return fmt.Errorf("echo %q", line)
		}
		return nil
	}
	if err := longLine(); err != nil {
		t.Fatal(err)
	}

	l := &load{n: n, stop: make(chan struct{})}
	for range 2 {
		l.run("client", outbound)
		l.run("server", inbound)
	}
	stopLoad := sync.OnceFunc(func() { close(l.stop); l.wg.Wait() })
	t.Cleanup(stopLoad)
	time.Sleep(300 * time.Millisecond)
	before := l.ok.Load()

	// The new ztunnel, a process of its own, takes the pods' listeners over.
	proc := startProcess(t, n, ca.Bundle, certs, pinDir)
	metrics2 := proc.metrics
	time.Sleep(300 * time.Millisecond)
	if err := longLine(); err != nil {
		t.Errorf("a connection open across the switch, while the old ztunnel still runs: %v", err)
	}
	// The old one drains: the long connection works until the grace ends.
	stopStart := time.Now()
	go stopOld()
	time.Sleep(grace / 2)
	if err := longLine(); err != nil {
		t.Errorf("a connection open across the switch, while the old ztunnel drains: %v", err)
	}
	select {
	case <-oldExited:
	case <-time.After(grace + 5*time.Second):
		t.Fatal("the old ztunnel did not stop within its grace")
	}
	stopOld()
	t.Logf("old ztunnel stopped %v after its context ended", time.Since(stopStart).Round(time.Millisecond))
	if err := longLine(); err == nil {
		t.Error("a connection of the old ztunnel outlived its grace")
	}

	// The new one serves what comes now.
	openedOut := map[string]string{"direction": "outbound", "source_workload": "client"}
	openedIn := map[string]string{"direction": "inbound", "destination_workload": "client", "connection_security_policy": "mutual_tls"}
	out0 := counter(t, metrics2, "warren_ztunnel_tcp_connections_opened_total", openedOut)
	in0 := counter(t, metrics2, "warren_ztunnel_tcp_connections_opened_total", openedIn)
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	okDuring := l.ok.Load() - before
	t.Logf("load: %d connections succeeded (%d during and after the handover), %d failed", l.ok.Load(), okDuring, l.fail.Load())
	if f := l.fail.Load(); f > 0 {
		t.Errorf("%d connections failed across the handover: %s", f, strings.Join(l.errs, "; "))
	}
	if okDuring < 20 {
		t.Errorf("only %d connections during the handover: the load proves little", okDuring)
	}
	for _, c := range []struct {
		role string
		dst  netip.AddrPort
	}{{"client", outbound}, {"server", inbound}} {
		if _, err := n.exchange(c.role, c.dst); err != nil {
			t.Errorf("%s -> %v after the old ztunnel exited: %v", c.role, c.dst, err)
		}
	}
	if out1 := counter(t, metrics2, "warren_ztunnel_tcp_connections_opened_total", openedOut); out1 <= out0 {
		t.Errorf("outbound connections opened by the new ztunnel: %v, then %v", out0, out1)
	}
	// Inbound streams are counted when they end.
	if in1 := counter(t, metrics2, "warren_ztunnel_tcp_connections_opened_total", openedIn); in1 <= in0 {
		t.Errorf("inbound connections opened by the new ztunnel: %v, then %v", in0, in1)
	}
	oldOut := counter(t, reg1, "warren_ztunnel_tcp_connections_opened_total", openedOut)
	t.Logf("outbound connections: %v by the old ztunnel, %v by the new one", oldOut, counter(t, metrics2, "warren_ztunnel_tcp_connections_opened_total", openedOut))

	t.Run("killed with no successor fails closed", func(t *testing.T) {
		long, err := n.dial("client", outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer long.Close()
		if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {
		case <-proc.exited:
		case <-time.After(5 * time.Second):
			t.Fatal("the killed ztunnel did not exit")
		}
		long.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(long, "%s\n", marker)
		if b, err := io.ReadAll(long); err == nil && strings.Contains(string(b), marker) {
			t.Errorf("a connection outlived its ztunnel: %q", b)
		}
		for _, c := range []struct {
			role string
			dst  netip.AddrPort
		}{{"client", outbound}, {"server", inbound}, {"client", netip.AddrPortFrom(outsiderIP, appPort)}, {"outsider", inbound}} {
			if got, err := n.exchange(c.role, c.dst); err == nil {
				t.Errorf("%s reached %v without node1's ztunnel: %q", c.role, c.dst, got)
			}
		}
	})

	stopDump()
	b, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("from outside the mesh")) {
		t.Errorf("the capture (%d bytes) missed the plaintext a non-mesh client sent: it proves nothing", len(b))
	}
	if bytes.Contains(b, []byte(marker)) {
		t.Error("a mesh pod's payload crossed the link between the nodes in plaintext")
	}
}
