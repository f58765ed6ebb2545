package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	"github.com/warrenmesh/warren/bpf/redirect/pins"
)

// Dataplane is what the enrollment logic needs from the kernel. Every method
// is idempotent, so a level-based reconcile loop can call it again.
type Dataplane interface {
	// Enroll steers the pod's TCP through the tunnel: outbound connections to
	// the tunnel's listener on 127.0.0.1 / [::1] in its netns (the port the
	// tunnel wrote to tunnel_ports, 15001 without an entry), inbound ones to
	// the tunnel's HBONE and plaintext listeners in the sockets map. Enrolling an enrolled pod
	// again updates it (a new netns or new addresses).
	Enroll(ctx context.Context, pod Pod) error
	// Unenroll puts the pod back on the direct path. Unknown pods are not an error.
	Unenroll(ctx context.Context, uid string) error
	// Pods lists the enrolled pods.
	Pods(ctx context.Context) ([]EnrolledPod, error)
	// Close releases the agent's handles and leaves redirection in place,
	// for the next agent to adopt.
	Close() error
}

// Pod is a pod to enroll.
type Pod struct {
	UID string
	// Netns is the path of the pod's network namespace: /proc/<pid>/ns/net
	// of one of its processes, or the runtime's /run/netns/<name>.
	Netns string
	// IPs are the pod's addresses: at most one IPv4 and one IPv6.
	IPs []netip.Addr
	// NodeIPs are addresses the node reaches the pod from, whose
	// connections pass to the app without the tunnel: the kubelet's probes
	// come from the node. The gateways of the routes in the pod's netns (the
	// node's side of the pod's link) are added to them at Enroll.
	NodeIPs []netip.Addr
}

// EnrolledPod is a pod as the kernel has it.
type EnrolledPod struct {
	UID string
	// NetnsCookie identifies the pod's network namespace to eBPF programs
	// and to SO_NETNS_COOKIE.
	NetnsCookie uint64
	IPs         []netip.Addr
	NodeIPs     []netip.Addr
}

// Errors callers can tell apart.
var (
	ErrInvalidPod  = errors.New("invalid pod")
	ErrNotEnrolled = errors.New("pod not enrolled")
	ErrNoOrigDst   = pins.ErrNoOrigDst // an accepted connection that was not redirected
	ErrClosed      = errors.New("dataplane closed")
)

// uidMax is the room the eBPF maps keep for a pod UID (a Kubernetes UID is 36).
const uidMax = 63

var uidRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Validate checks that a pod can be enrolled.
func (p Pod) Validate() error {
	if len(p.UID) == 0 || len(p.UID) > uidMax || !uidRE.MatchString(p.UID) {
		return fmt.Errorf("%w: uid %q: want 1 to %d letters, digits, '.', '_' or '-'", ErrInvalidPod, p.UID, uidMax)
	}
	if p.Netns == "" {
		return fmt.Errorf("%w: pod %s: no netns path", ErrInvalidPod, p.UID)
	}
	var v4, v6 int
	for _, ip := range p.IPs {
		switch {
		case !ip.IsValid() || ip.IsUnspecified() || ip.IsLoopback() || ip.Unmap().IsLoopback():
			return fmt.Errorf("%w: pod %s: address %v", ErrInvalidPod, p.UID, ip)
		case ip.Unmap().Is4():
			v4++
		default:
			v6++
		}
	}
	for _, ip := range p.NodeIPs {
		if !ip.IsValid() || ip.IsUnspecified() || slices.Contains(p.IPs, ip) {
			return fmt.Errorf("%w: pod %s: node address %v", ErrInvalidPod, p.UID, ip)
		}
	}
	if v4+v6 == 0 || v4 > 1 || v6 > 1 {
		return fmt.Errorf("%w: pod %s: addresses %v: want one IPv4, one IPv6 or one of each", ErrInvalidPod, p.UID, p.IPs)
	}
	return nil
}
