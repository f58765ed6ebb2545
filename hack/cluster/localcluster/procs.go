package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// run runs a command and returns its combined output in the error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// output runs a command and returns its standard output.
func output(ctx context.Context, name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// daemon is a long-running process the cluster starts, with a pid file and a log file.
type daemon struct {
	// Name is the component name, also the base name of its pid and log files
	// ("kube-apiserver", "node1/kubelet").
	Name string
	// Cgroup is the cgroup (below the hierarchy roots) the process joins before it execs.
	Cgroup string
	// Netns, when set, is the network namespace file the process enters.
	Netns string
	// Argv is the command.
	Argv []string
	// Env is added to the environment.
	Env []string
}

func (c *Config) pidFile(name string) string { return filepath.Join(c.runDir(), name+".pid") }
func (c *Config) logFile(name string) string { return filepath.Join(c.logDir(), name+".log") }

// start launches d detached (new session, output to its log file), in its cgroup in every
// hierarchy and its network namespace, and records its pid. The cgroup is joined by a shell
// before it execs, so no child can escape it.
func (c *Config) start(d daemon, h *hierarchies) error {
	for _, p := range []string{c.pidFile(d.Name), c.logFile(d.Name)} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(c.logFile(d.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	argv := d.Argv
	if d.Netns != "" {
		argv = append([]string{"nsenter", "--net=" + d.Netns, "--"}, argv...)
	}
	script := `for f in ` + strings.Join(h.procsFiles(d.Cgroup), " ") + `; do echo $$ > "$f" || exit 1; done; exec "$@"`
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PATH="+c.binDir()+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.Env = append(cmd.Env, d.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.Name, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	// Reap it in the background if it dies while we still run; afterwards init does.
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := os.WriteFile(c.pidFile(d.Name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	// Return once it has joined its cgroups, so that liveness checks (which look for our
	// cgroup) never mistake a starting process for a dead one.
	deadline := time.Now().Add(5 * time.Second)
	for !ownedPid(pid) {
		select {
		case <-exited:
			return fmt.Errorf("start %s: exited at once (read %s)", d.Name, c.logFile(d.Name))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start %s: did not join cgroup %s", d.Name, d.Cgroup)
		}
	}
	return nil
}

// readPid returns the pid recorded for name, or 0.
func (c *Config) readPid(name string) int {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// alive reports whether the recorded process for name still runs and is one of ours (it is
// in one of our cgroups, so a recycled pid is not mistaken for it).
func (c *Config) alive(name string) bool {
	pid := c.readPid(name)
	return pid > 0 && ownedPid(pid)
}

// ownedPid reports whether pid runs inside the cluster's cgroups.
func ownedPid(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		// A zombie still has its cgroup file; it is not running.
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	return strings.Contains(string(b), "/"+cgroupParent+"/")
}

// stopPidFiles sends SIGTERM to every recorded process that is still ours, waits up to grace
// for them to exit, then SIGKILLs the rest. Pid files are removed.
func (c *Config) stopPidFiles(grace time.Duration) {
	var pids []int
	_ = filepath.Walk(c.runDir(), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(p, ".pid") {
			return nil
		}
		name := strings.TrimSuffix(strings.TrimPrefix(p, c.runDir()+"/"), ".pid")
		if pid := c.readPid(name); pid > 0 && ownedPid(pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			pids = append(pids, pid)
		}
		_ = os.Remove(p)
		return nil
	})
	deadline := time.Now().Add(grace)
	for _, pid := range pids {
		for ownedPid(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if ownedPid(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// errStep wraps a failure with the step it happened in and the log to read.
type errStep struct {
	step, log string
	err       error
}

func (e *errStep) Error() string {
	if e.log != "" {
		return fmt.Sprintf("step %q failed: %v (read %s)", e.step, e.err, e.log)
	}
	return fmt.Sprintf("step %q failed: %v", e.step, e.err)
}
func (e *errStep) Unwrap() error { return e.err }

func stepErr(step, log string, err error) error {
	if err == nil {
		return nil
	}
	var se *errStep
	if errors.As(err, &se) {
		return err
	}
	return &errStep{step: step, log: log, err: err}
}
