package nodeagent

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/podroute"
)

// DefaultBPFFS is where the agent expects (and if needed mounts) a bpffs.
const DefaultBPFFS = "/sys/fs/bpf"

// Options configure a Kernel dataplane.
type Options struct {
	// Node names this agent; several agents may share one kernel, each with
	// its own node name, maps and pins.
	Node string
	// BPFFS is a bpffs mount point, mounted if it is not one yet; DefaultBPFFS if empty.
	BPFFS string
	// PinDir holds this agent's pinned maps and links; it must be inside
	// BPFFS. <BPFFS>/warren/<Node> if empty.
	PinDir string
	// Cgroup is the cgroup2 directory the connect and sockops programs are
	// attached to; the cgroup2 root, found in /proc/self/mountinfo, if empty.
	// A directory that is not a cgroup2 filesystem but holds one at
	// "unified" (a hybrid host's /sys/fs/cgroup) means that one.
	Cgroup string
	// TunnelMark is the SO_MARK of the tunnel's own sockets; redirect.DefaultTunnelMark if zero.
	// Its bit podroute.SourceMarkBit must be clear: with it, the mark is the
	// one of the tunnel's sockets that use a client's address.
	TunnelMark uint32
	// NoSourceAddress leaves enrolled pods without the policy routing that
	// lets the tunnel connect to their apps from the client's address
	// (internal/podroute): apps then see the pod's own address as the client's.
	NoSourceAddress bool
	// ProcSys is a proc/sys directory the agent can write: the pods'
	// sysctls for the source-address routing are set through it, from
	// inside each pod's netns. "/proc/sys" if empty; in a container, whose
	// own is read-only, the host's mounted elsewhere.
	ProcSys string
	// Logger receives the agent's logs; none if nil.
	Logger *slog.Logger
	// Registerer receives the agent's metrics; none if nil.
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	if o.BPFFS == "" {
		o.BPFFS = DefaultBPFFS
	}
	if o.PinDir == "" && o.Node != "" {
		o.PinDir = filepath.Join(o.BPFFS, "warren", o.Node)
	}
	if o.TunnelMark == 0 {
		o.TunnelMark = redirect.DefaultTunnelMark
	}
	if o.ProcSys == "" {
		o.ProcSys = "/proc/sys"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the options after defaults are applied.
func (o *Options) Validate() error {
	if o.Node == "" || strings.ContainsAny(o.Node, "/\x00") || o.Node == "." || o.Node == ".." {
		return fmt.Errorf("options: node name %q: want a non-empty name without '/'", o.Node)
	}
	if !filepath.IsAbs(o.BPFFS) || !filepath.IsAbs(o.PinDir) {
		return errors.New("options: BPFFS and PinDir must be absolute paths")
	}
	rel, err := filepath.Rel(o.BPFFS, o.PinDir)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("options: pin dir %s is not inside bpffs %s", o.PinDir, o.BPFFS)
	}
	if err := podroute.CheckTunnelMark(o.TunnelMark); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	return nil
}
