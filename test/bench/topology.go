package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/test/bench/procstat"
)

// nsPrefix starts the name of every network namespace the benchmark creates, so a leftover is
// recognisable (and removable: the name carries the pid of the run that made it).
const nsPrefix = "wbench-"

// Addresses inside the benchmark's namespaces. Nothing outside them routes to these.
const (
	node1Link   = "10.252.0.1" // node1 <-> node2, a /30
	node2Link   = "10.252.0.2"
	clientGW    = "10.252.1.1" // node1's side of the client pod's link
	clientIP    = "10.252.1.2"
	serverGW    = "10.252.2.1" // node2's side of the server pod's link
	serverIP    = "10.252.2.2"
	localGW     = "10.252.3.1" // node1's side of the same-node server pod's link
	localIP     = "10.252.3.2"
	clientNet   = "10.252.1.0/24"
	serverNet   = "10.252.2.0/24"
	localNet    = "10.252.3.0/24"
	iperfPort   = 5201
	httpPort    = 8080
	echoPayload = 1024 // bytes in each HTTP response body
)

// Topology is two "nodes" joined by a veth, a client pod on node1, a server pod on node2 and a
// second server pod on node1 for the same-node path. Each is a network namespace; pods reach
// each other through their nodes' routing, as pod traffic does on a cluster without overlay.
type Topology struct {
	Node1, Node2, Client, Server, Local string

	log     *slog.Logger
	logDir  string
	created []string
	procs   []*Proc
}

// NewTopology creates the namespaces and links. On error it removes what it made.
func NewTopology(ctx context.Context, log *slog.Logger, logDir string) (_ *Topology, err error) {
	p := fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())
	t := &Topology{Node1: p + "node1", Node2: p + "node2", Client: p + "client", Server: p + "server", Local: p + "local", log: log, logDir: logDir}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	for _, ns := range []string{t.Node1, t.Node2, t.Client, t.Server, t.Local} {
		if err := cmdRun(ctx, "ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		t.created = append(t.created, ns)
		if err := cmdRun(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return nil, err
		}
		// The connection-rate test opens tens of thousands of connections a run; let every
		// dialer reuse TIME_WAIT ports rather than run out of them.
		for _, kv := range [][2]string{{"net.ipv4.tcp_tw_reuse", "1"}, {"net.ipv4.ip_local_port_range", "1024 65000"}} {
			if err := sysctl(ctx, ns, kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	// The veth ends are created straight inside their namespaces, so no name is ever taken in
	// the host's namespace.
	links := []struct{ a, aDev, aAddr, b, bDev, bAddr string }{
		{t.Node1, "to-node2", node1Link + "/30", t.Node2, "to-node1", node2Link + "/30"},
		{t.Node1, "client", clientGW + "/24", t.Client, "eth0", clientIP + "/24"},
		{t.Node2, "server", serverGW + "/24", t.Server, "eth0", serverIP + "/24"},
		{t.Node1, "local", localGW + "/24", t.Local, "eth0", localIP + "/24"},
	}
	for _, l := range links {
		if err := cmdRun(ctx, "ip", "link", "add", l.aDev, "netns", l.a, "type", "veth", "peer", "name", l.bDev, "netns", l.b); err != nil {
			return nil, err
		}
		for _, e := range [][3]string{{l.a, l.aDev, l.aAddr}, {l.b, l.bDev, l.bAddr}} {
			if err := cmdRun(ctx, "ip", "-n", e[0], "addr", "add", e[2], "dev", e[1]); err != nil {
				return nil, err
			}
			if err := cmdRun(ctx, "ip", "-n", e[0], "link", "set", e[1], "up"); err != nil {
				return nil, err
			}
		}
	}
	routes := [][]string{
		{t.Client, "default", "via", clientGW},
		{t.Server, "default", "via", serverGW},
		{t.Local, "default", "via", localGW},
		{t.Node1, serverNet, "via", node2Link},
		{t.Node2, clientNet, "via", node1Link},
		{t.Node2, localNet, "via", node1Link},
	}
	for _, r := range routes {
		if err := cmdRun(ctx, append([]string{"ip", "-n", r[0], "route", "add"}, r[1:]...)...); err != nil {
			return nil, err
		}
	}
	for _, ns := range []string{t.Node1, t.Node2} {
		if err := sysctl(ctx, ns, "net.ipv4.ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Close stops every process started in the topology and deletes its namespaces. It is safe to
// call more than once and keeps going past errors, so that a failed run still cleans up.
func (t *Topology) Close() error {
	var errs []error
	for i := len(t.procs) - 1; i >= 0; i-- {
		t.procs[i].Stop()
	}
	t.procs = nil
	for i := len(t.created) - 1; i >= 0; i-- {
		// Not the run context: cleanup must happen after a Ctrl-C too.
		if err := cmdRun(context.Background(), "ip", "netns", "del", t.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	t.created = nil
	return errors.Join(errs...)
}

// Start runs a long-lived process in namespace ns; Close stops it if the caller did not.
func (t *Topology) Start(ns, name string, args ...string) (*Proc, error) {
	logf, err := os.Create(filepath.Join(t.logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...) // ip execs in place: the pid is the program's
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a Ctrl-C reaches the harness only, which then stops things in order
		Pdeathsig: syscall.SIGKILL, // and nothing outlives a harness that is killed outright
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), logPath: logf.Name()}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.procs = append(t.procs, p)
	t.log.Debug("started", "name", name, "pid", p.PID, "netns", ns)
	return p, nil
}

// Proc is a process the benchmark started.
type Proc struct {
	Name    string
	PID     int
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	logPath string
}

// Stop ends the process by its pid: SIGTERM, then SIGKILL if it lingers.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// WaitListening waits until the process's namespace has a listener on port.
func (p *Proc) WaitListening(ctx context.Context, port uint16) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v); see %s", p.Name, p.err, p.logPath)
		default:
		}
		ok, err := procstat.Listening(p.PID, port)
		if err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: nothing listens on port %d after 10s (%v); see %s", p.Name, port, err, p.logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// removeStale deletes namespaces left by an earlier run that was killed before it could clean
// up (its pid is gone). Its processes died with it (Pdeathsig).
func removeStale(ctx context.Context, log *slog.Logger) error {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // that run is still going
		}
		log.Info("removing a namespace left by an earlier run", "netns", e.Name())
		if err := cmdRun(ctx, "ip", "netns", "del", e.Name()); err != nil {
			return err
		}
	}
	return nil
}

func sysctl(ctx context.Context, ns, key, value string) error {
	return cmdRun(ctx, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", key+"="+value)
}

// cmdRun runs a short command and returns its output in the error when it fails.
func cmdRun(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
