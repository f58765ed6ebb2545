package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/bpf/redirect/pins"
	"github.com/warrenmesh/warren/internal/netns"
)

// Kernel is the Linux Dataplane: the redirect eBPF programs, attached and
// pinned under Options.PinDir.
type Kernel struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	closed bool
	objs   redirect.RedirectObjects
	cgroup []link.Link          // connect4, connect6, sockops
	pods   map[string]*podState // by UID
	table  *OrigDstTable
}

type podState struct {
	cookie  uint64
	ips     []netip.Addr
	nodeIPs []netip.Addr
	link    link.Link // sk_lookup in the pod's netns
	// netns is the path the pod was enrolled with, for unenroll to undo the
	// source routing there; empty for a pod adopted from pins until it is
	// enrolled again.
	netns string
}

var _ Dataplane = (*Kernel)(nil)

// pinned maps, by name in redirect.c; everything else in the object (.rodata) is not pinned.
var pinnedMaps = []string{
	redirect.RedirectMapEnrolled,
	redirect.RedirectMapPodIps,
	redirect.RedirectMapNodeIps,
	redirect.RedirectMapOrigByCookie,
	redirect.RedirectMapOrigByTuple,
	redirect.RedirectMapSockets,
	redirect.RedirectMapTunnelPorts,
	redirect.RedirectMapTunnelSyns,
	redirect.RedirectMapCounters,
}

const (
	linksDir       = "links"
	skLookupPrefix = "sk_lookup_"
)

// Open loads the programs and attaches them, or adopts the ones a previous
// agent pinned under the same PinDir (their links are switched to the
// freshly loaded programs in place, so redirection never stops).
func Open(ctx context.Context, opts Options) (*Kernel, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Cgroup == "" {
		cg, err := Cgroup2Root()
		if err != nil {
			return nil, err
		}
		opts.Cgroup = cg
	}
	cg, err := ResolveCgroup2(opts.Cgroup)
	if err != nil {
		return nil, err
	}
	opts.Cgroup = cg
	if err := ensureBPFFS(opts.BPFFS); err != nil {
		return nil, err
	}
	_, statErr := os.Stat(opts.PinDir)
	firstInstall := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(filepath.Join(opts.PinDir, linksDir), 0o700); err != nil {
		return nil, fmt.Errorf("pin dir: %w", err)
	}
	k := &Kernel{
		opts: opts,
		log:  opts.Logger.With("node", opts.Node),
		pods: map[string]*podState{},
	}
	if err := k.open(); err != nil {
		k.closeHandles()
		if firstInstall { // a first install that failed leaves nothing behind
			_ = removePinDir(opts.PinDir)
		}
		return nil, err
	}
	k.log.Info("dataplane ready", "pin_dir", opts.PinDir, "cgroup", opts.Cgroup, "pods", len(k.pods))
	return k, nil
}

func (k *Kernel) open() error {
	if err := k.load(); err != nil {
		return err
	}
	if err := k.attachCgroup(); err != nil {
		return err
	}
	if err := k.adoptPods(); err != nil {
		return err
	}
	k.table = pins.NewOrigDstTable(k.objs.OrigByTuple)
	k.metrics = newMetrics(k.stats)
	if k.opts.Registerer != nil {
		if err := k.opts.Registerer.Register(k.metrics); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

func (k *Kernel) load() error {
	spec, err := redirect.LoadRedirect()
	if err != nil {
		return err
	}
	for _, name := range pinnedMaps {
		spec.Maps[name].Pinning = ebpf.PinByName
	}
	if err := spec.Variables[redirect.RedirectVarTunnelMark].Set(k.opts.TunnelMark); err != nil {
		return fmt.Errorf("variable %s: %w", redirect.RedirectVarTunnelMark, err)
	}
	err = spec.LoadAndAssign(&k.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: k.opts.PinDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load: maps pinned in %s by another version do not match (uninstall first): %w", k.opts.PinDir, err)
	}
	if errors.Is(err, unix.EPERM) {
		missing := missingCaps()
		if len(missing) == 0 {
			return fmt.Errorf("load: %w (the agent needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN, or root)", err)
		}
		return fmt.Errorf("load: the agent lacks %s (it needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN): %w", strings.Join(missing, ", "), err)
	}
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	return nil
}

// missingCaps names the capabilities the agent needs and does not have.
func missingCaps() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	var missing []string
	for _, c := range []struct {
		name string
		bit  uint
	}{{"CAP_BPF", unix.CAP_BPF}, {"CAP_NET_ADMIN", unix.CAP_NET_ADMIN}, {"CAP_SYS_ADMIN", unix.CAP_SYS_ADMIN}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	return missing
}

func (k *Kernel) attachCgroup() (err error) {
	var created []link.Link
	defer func() {
		if err != nil { // a first install that failed half-way leaves nothing behind
			for _, l := range created {
				_ = l.Unpin()
			}
		}
	}()
	for _, a := range []struct {
		name   string
		prog   *ebpf.Program
		attach ebpf.AttachType
	}{
		{"connect4", k.objs.WarrenConnect4, ebpf.AttachCGroupInet4Connect},
		{"connect6", k.objs.WarrenConnect6, ebpf.AttachCGroupInet6Connect},
		{"sockops", k.objs.WarrenSockops, ebpf.AttachCGroupSockOps},
	} {
		pin := filepath.Join(k.opts.PinDir, linksDir, a.name)
		l, err := adoptLink(pin, a.prog)
		if err != nil {
			k.log.Warn("pinned link not adopted, attaching anew", "link", a.name, "err", err)
		}
		if l == nil {
			l, err = link.AttachCgroup(link.CgroupOptions{Path: k.opts.Cgroup, Attach: a.attach, Program: a.prog})
			if err != nil {
				return fmt.Errorf("program %s: attach to cgroup %s: %w", a.name, k.opts.Cgroup, err)
			}
			if err := l.Pin(pin); err != nil {
				l.Close()
				return fmt.Errorf("program %s: %w", a.name, err)
			}
			created = append(created, l)
		}
		k.cgroup = append(k.cgroup, l)
	}
	return nil
}

// adoptLink loads a pinned link and switches it to prog. It returns nil, nil
// when nothing is pinned there, and removes a pin it cannot use.
func adoptLink(pin string, prog *ebpf.Program) (link.Link, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err == nil {
		if err = l.Update(prog); err == nil {
			return l, nil
		}
		l.Close()
	}
	_ = os.Remove(pin)
	return nil, fmt.Errorf("link %s: %w", pin, err)
}

// adoptPods rebuilds the pod table from the pinned maps and links, and
// drops what is half there (a pod without its sk_lookup link, a link without its pod).
func (k *Kernel) adoptPods() error {
	var (
		cookie uint64
		info   redirect.RedirectPodInfo
	)
	found := map[string]uint64{}
	iter := k.objs.Enrolled.Iterate()
	for iter.Next(&cookie, &info) {
		found[podUID(&info)] = cookie
		k.pods[podUID(&info)] = &podState{cookie: cookie, ips: podIPs(&info)}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("map enrolled: %w", err)
	}
	byCookie := map[uint64]*podState{}
	for _, p := range k.pods {
		byCookie[p.cookie] = p
	}
	var (
		nip   redirect.RedirectNodeIp
		one   uint8
		stale []redirect.RedirectNodeIp
	)
	niter := k.objs.NodeIps.Iterate()
	for niter.Next(&nip, &one) {
		if p := byCookie[nip.Netns]; p != nil {
			p.nodeIPs = append(p.nodeIPs, netip.AddrFrom16(pins.Unwords(nip.Ip.Ip6)).Unmap())
		} else {
			stale = append(stale, nip)
		}
	}
	if err := niter.Err(); err != nil {
		return fmt.Errorf("map node_ips: %w", err)
	}
	for _, key := range stale {
		_ = k.objs.NodeIps.Delete(&key)
	}
	entries, err := os.ReadDir(filepath.Join(k.opts.PinDir, linksDir))
	if err != nil {
		return fmt.Errorf("pin dir: %w", err)
	}
	for _, e := range entries {
		uid, ok := strings.CutPrefix(e.Name(), skLookupPrefix)
		if !ok {
			continue
		}
		pin := filepath.Join(k.opts.PinDir, linksDir, e.Name())
		p := k.pods[uid]
		if p == nil {
			k.log.Warn("removing sk_lookup link of a pod not enrolled", "uid", uid)
			_ = os.Remove(pin)
			continue
		}
		l, err := adoptLink(pin, k.objs.WarrenSkLookup)
		if err != nil {
			k.log.Warn("sk_lookup link not adopted", "uid", uid, "err", err)
			continue
		}
		p.link = l
	}
	for uid, p := range k.pods {
		if p.link == nil {
			k.log.Warn("unenrolling a pod whose sk_lookup link is gone; it will be enrolled again", "uid", uid)
			if err := k.unenrollLocked(uid); err != nil {
				return err
			}
		}
	}
	return nil
}

// Enroll implements Dataplane.
func (k *Kernel) Enroll(ctx context.Context, pod Pod) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	if err := k.enrollLocked(pod); err != nil {
		k.metrics.fail("enroll")
		return err
	}
	return nil
}

func (k *Kernel) enrollLocked(pod Pod) error {
	ns, err := openNetns(pod.Netns)
	if err != nil {
		return fmt.Errorf("pod %s: %w", pod.UID, err)
	}
	defer ns.Close()
	cookie, err := netns.Cookie(ns)
	if err != nil {
		return fmt.Errorf("pod %s: netns %s: %w", pod.UID, pod.Netns, err)
	}
	gws, err := gateways(ns)
	if err != nil {
		return fmt.Errorf("pod %s: netns %s: %w", pod.UID, pod.Netns, err)
	}
	for _, gw := range gws {
		if !slices.Contains(pod.NodeIPs, gw) && !slices.Contains(pod.IPs, gw) {
			pod.NodeIPs = append(pod.NodeIPs, gw)
		}
	}
	for uid, p := range k.pods {
		if uid != pod.UID && p.cookie == cookie {
			return fmt.Errorf("%w: pod %s: netns %s already enrolled for pod %s", ErrInvalidPod, pod.UID, pod.Netns, uid)
		}
	}
	if p := k.pods[pod.UID]; p != nil {
		if p.cookie == cookie {
			p.netns = pod.Netns
			k.sourceRouting(ns, pod)
			return k.updateIPs(pod.UID, p, pod.IPs, pod.NodeIPs)
		}
		// A new sandbox for the same pod: start over.
		if err := k.unenrollLocked(pod.UID); err != nil {
			return err
		}
	}

	// In this order, each step harmless without the next: sk_lookup acts
	// only on addresses in pod_ips, connect4/6 only on enrolled netns.
	k.sourceRouting(ns, pod)
	p := &podState{cookie: cookie, netns: pod.Netns}
	pin := filepath.Join(k.opts.PinDir, linksDir, skLookupPrefix+pod.UID)
	l, err := link.AttachNetNs(int(ns.Fd()), k.objs.WarrenSkLookup)
	if err != nil {
		return fmt.Errorf("pod %s: program sk_lookup: attach to netns %s: %w", pod.UID, pod.Netns, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pod %s: program sk_lookup: %w", pod.UID, err)
	}
	p.link = l
	k.pods[pod.UID] = p
	if err := k.updateIPs(pod.UID, p, pod.IPs, pod.NodeIPs); err != nil {
		return errors.Join(err, k.unenrollLocked(pod.UID))
	}
	k.log.Info("pod enrolled", "uid", pod.UID, "netns", pod.Netns, "netns_cookie", cookie, "ips", pod.IPs, "node_ips", pod.NodeIPs)
	return nil
}

// sourceRouting sets up the pod's routing for the tunnel's connections from
// a client's address (internal/podroute). A pod where that fails is still
// enrolled: the tunnel then connects to its app from the pod's own address.
func (k *Kernel) sourceRouting(ns *os.File, pod Pod) {
	if k.opts.NoSourceAddress {
		return
	}
	ipv6 := slices.ContainsFunc(pod.IPs, func(ip netip.Addr) bool { return ip.Is6() && !ip.Is4In6() })
	if err := setupSourceRouting(ns, k.opts.ProcSys, k.opts.TunnelMark, ipv6); err != nil {
		k.metrics.fail("source_routing")
		k.log.Warn("pod enrolled without source-address routing: its app will see the pod's own address as the client's",
			"uid", pod.UID, "netns", pod.Netns, "err", err)
	}
}

// updateIPs writes the pod's addresses to pod_ips, node_ips and its enrolled
// entry. Node addresses go first, so that no probe is ever steered.
func (k *Kernel) updateIPs(uid string, p *podState, ips, nodeIPs []netip.Addr) error {
	info := podInfo(uid, ips)
	one := uint8(1)
	for _, ip := range nodeIPs {
		key := nodeIPKey(p.cookie, ip)
		if err := k.objs.NodeIps.Update(&key, &one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("pod %s: map node_ips: %w", uid, err)
		}
	}
	for _, old := range p.nodeIPs {
		if !containsAddr(nodeIPs, old) {
			key := nodeIPKey(p.cookie, old)
			_ = k.objs.NodeIps.Delete(&key)
		}
	}
	p.nodeIPs = append([]netip.Addr(nil), nodeIPs...)
	for _, ip := range ips {
		key := ipKey(ip)
		if err := k.objs.PodIps.Update(&key, &p.cookie, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("pod %s: map pod_ips: %w", uid, err)
		}
	}
	for _, old := range p.ips {
		if !containsAddr(ips, old) {
			k.deletePodIP(old, p.cookie)
		}
	}
	p.ips = append([]netip.Addr(nil), ips...)
	if err := k.objs.Enrolled.Update(&p.cookie, &info, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("pod %s: map enrolled: %w", uid, err)
	}
	return nil
}

// Unenroll implements Dataplane.
func (k *Kernel) Unenroll(ctx context.Context, uid string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	if err := k.unenrollLocked(uid); err != nil {
		k.metrics.fail("unenroll")
		return err
	}
	return nil
}

func (k *Kernel) unenrollLocked(uid string) error {
	p := k.pods[uid]
	if p == nil {
		return nil
	}
	var errs []error
	// Outbound first: from here on the pod's new connections go direct.
	if err := k.objs.Enrolled.Delete(&p.cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("map enrolled: %w", err))
	}
	for _, ip := range p.ips {
		k.deletePodIP(ip, p.cookie)
	}
	// After pod_ips: until then sk_lookup may still read them.
	for _, ip := range p.nodeIPs {
		key := nodeIPKey(p.cookie, ip)
		if err := k.objs.NodeIps.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("map node_ips: %w", err))
		}
	}
	if err := k.objs.TunnelPorts.Delete(&p.cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("map tunnel_ports: %w", err))
	}
	for _, kind := range []redirect.RedirectSockKind{redirect.RedirectSockKindSOCK_KIND_INBOUND, redirect.RedirectSockKindSOCK_KIND_HBONE} {
		key := redirect.RedirectSockKey{Netns: p.cookie, Kind: kind}
		if err := k.objs.Sockets.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("map sockets: %w", err))
		}
	}
	if p.link != nil {
		if err := p.link.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("program sk_lookup: %w", err))
		}
		if err := p.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("program sk_lookup: %w", err))
		}
	} else {
		_ = os.Remove(filepath.Join(k.opts.PinDir, linksDir, skLookupPrefix+uid))
	}
	// Last: the tunnel may be finishing a connection to the app until the
	// steering above is gone. A pod whose netns is gone has nothing left.
	if !k.opts.NoSourceAddress && p.netns != "" {
		if ns, err := openNetns(p.netns); err == nil {
			if err := teardownSourceRouting(ns, k.opts.ProcSys, k.opts.TunnelMark); err != nil {
				k.log.Warn("pod unenrolled, but its source-address routing stays", "uid", uid, "netns", p.netns, "err", err)
			}
			ns.Close()
		}
	}
	delete(k.pods, uid)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod %s: unenroll: %w", uid, err)
	}
	k.log.Info("pod unenrolled", "uid", uid)
	return nil
}

// deletePodIP removes ip from pod_ips if it still points at this pod's netns.
func (k *Kernel) deletePodIP(ip netip.Addr, cookie uint64) {
	key := ipKey(ip)
	var cur uint64
	if err := k.objs.PodIps.Lookup(&key, &cur); err == nil && cur == cookie {
		_ = k.objs.PodIps.Delete(&key)
	}
}

// Pods implements Dataplane.
func (k *Kernel) Pods(ctx context.Context) ([]EnrolledPod, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, ErrClosed
	}
	out := make([]EnrolledPod, 0, len(k.pods))
	for uid, p := range k.pods {
		out = append(out, EnrolledPod{UID: uid, NetnsCookie: p.cookie, IPs: append([]netip.Addr(nil), p.ips...),
			NodeIPs: append([]netip.Addr(nil), p.nodeIPs...)})
	}
	return out, nil
}

// TunnelSockets are the tunnel's listeners inside one pod's netns.
type TunnelSockets struct {
	HBONE   syscall.Conn // port 15008
	Inbound syscall.Conn // port 15006
}

// SetTunnelSockets makes the pod's inbound connections go to the tunnel's
// listeners. Both must be TCP listeners inside the pod's netns, and not
// multipath (Go's default since 1.24: net.ListenConfig.SetMultipathTCP(false)).
// A listener that closes leaves the map by itself: inbound connections then
// fail rather than reach the pod in plaintext.
func (k *Kernel) SetTunnelSockets(ctx context.Context, uid string, s TunnelSockets) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	p := k.pods[uid]
	if p == nil {
		return fmt.Errorf("pod %s: %w", uid, ErrNotEnrolled)
	}
	for _, e := range []struct {
		kind redirect.RedirectSockKind
		conn syscall.Conn
		name string
	}{
		{redirect.RedirectSockKindSOCK_KIND_HBONE, s.HBONE, "hbone"},
		{redirect.RedirectSockKindSOCK_KIND_INBOUND, s.Inbound, "inbound"},
	} {
		if e.conn == nil {
			return fmt.Errorf("pod %s: %s socket missing", uid, e.name)
		}
		err := pins.SetListener(k.objs.Sockets, e.kind, e.conn, func(c uint64) error {
			if c != p.cookie {
				return fmt.Errorf("socket is not in the pod's netns")
			}
			return nil
		})
		if err != nil {
			k.metrics.fail("set_tunnel_sockets")
			return fmt.Errorf("pod %s: %s socket: %w", uid, e.name, err)
		}
	}
	return nil
}

// OrigDst returns where an accepted, redirected connection was going; see OrigDstTable.
func (k *Kernel) OrigDst(conn syscall.Conn) (netip.AddrPort, error) {
	return k.table.Conn(conn)
}

// Close implements Dataplane. Pins stay, and so does redirection.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if k.opts.Registerer != nil {
		k.opts.Registerer.Unregister(k.metrics)
	}
	k.log.Info("dataplane closed, redirection stays in place")
	return k.closeHandles()
}

// Uninstall detaches every program, removes every pin and the pin dir, and closes.
func (k *Kernel) Uninstall(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	var errs []error
	for uid := range k.pods {
		errs = append(errs, k.unenrollLocked(uid))
	}
	for _, l := range k.cgroup {
		errs = append(errs, l.Unpin())
	}
	for _, name := range pinnedMaps {
		if m := k.mapByName(name); m != nil {
			errs = append(errs, m.Unpin())
		}
	}
	k.closed = true
	if k.opts.Registerer != nil {
		k.opts.Registerer.Unregister(k.metrics)
	}
	errs = append(errs, k.closeHandles())
	// And whatever else is pinned there (an older version's links).
	errs = append(errs, removePinDir(k.opts.PinDir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	k.log.Info("dataplane uninstalled")
	return nil
}

// RemovePins removes everything an agent pinned under opts.PinDir without
// loading anything, which detaches its programs once no process holds them:
// the way out when Open refuses maps pinned by an incompatible version.
func RemovePins(opts Options) error {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(opts.PinDir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("pin dir %s: %w", opts.PinDir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("pin dir %s: not on a bpffs", opts.PinDir)
	}
	return removePinDir(opts.PinDir)
}

func removePinDir(dir string) error {
	// Links are detached by the last close of the last reference: when that
	// is the pin's, it happens later, in the kernel's own time. Holding a
	// reference while unpinning makes it this close, now.
	entries, _ := os.ReadDir(filepath.Join(dir, linksDir))
	for _, e := range entries {
		pin := filepath.Join(dir, linksDir, e.Name())
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			_ = l.Unpin()
			l.Close()
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("pin dir: %w", err)
	}
	_ = os.Remove(filepath.Dir(dir)) // <bpffs>/warren, when this was the last node in it
	return nil
}

func (k *Kernel) mapByName(name string) *ebpf.Map {
	switch name {
	case redirect.RedirectMapEnrolled:
		return k.objs.Enrolled
	case redirect.RedirectMapPodIps:
		return k.objs.PodIps
	case redirect.RedirectMapNodeIps:
		return k.objs.NodeIps
	case redirect.RedirectMapOrigByCookie:
		return k.objs.OrigByCookie
	case redirect.RedirectMapOrigByTuple:
		return k.objs.OrigByTuple
	case redirect.RedirectMapSockets:
		return k.objs.Sockets
	case redirect.RedirectMapTunnelPorts:
		return k.objs.TunnelPorts
	case redirect.RedirectMapTunnelSyns:
		return k.objs.TunnelSyns
	case redirect.RedirectMapCounters:
		return k.objs.Counters
	}
	return nil
}

func (k *Kernel) closeHandles() error {
	var errs []error
	for _, l := range k.cgroup {
		errs = append(errs, l.Close())
	}
	k.cgroup = nil
	for _, p := range k.pods {
		if p.link != nil {
			errs = append(errs, p.link.Close())
		}
	}
	errs = append(errs, k.objs.Close())
	return errors.Join(errs...)
}

// stats reads the counters and map sizes for metrics.
func (k *Kernel) stats() (stats, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return stats{}, ErrClosed
	}
	s := stats{pods: len(k.pods), mapEntries: map[string]int{}}
	for p := range programNames {
		for a := range actionNames {
			key := redirect.CounterKey(redirect.RedirectProgId(p), redirect.RedirectAction(a))
			var perCPU []uint64
			if err := k.objs.Counters.Lookup(&key, &perCPU); err != nil {
				return stats{}, fmt.Errorf("map counters: %w", err)
			}
			for _, n := range perCPU {
				s.actions[p][a] += n
			}
		}
	}
	for _, name := range pinnedMaps {
		if name == redirect.RedirectMapCounters {
			continue
		}
		n, err := countEntries(k.mapByName(name))
		if err != nil {
			return stats{}, fmt.Errorf("map %s: %w", name, err)
		}
		s.mapEntries[name] = n
	}
	return s, nil
}

// countEntries walks a hash map's keys; at most MaxEntries steps, since a
// walk restarts from the first key when the current one is deleted under it.
func countEntries(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	var prev any // nil: from the start
	n := 0
	for n < int(m.MaxEntries()) {
		err := m.NextKey(prev, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return 0, err
		}
		n++
		copy(key, next)
		prev = key
	}
	return n, nil
}

func openNetns(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || t != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("netns %s: not a network namespace", path)
	}
	return f, nil
}

func ipKey(ip netip.Addr) redirect.RedirectIp {
	return redirect.RedirectIp{Ip6: pins.Words(ip.As16())}
}

func nodeIPKey(cookie uint64, ip netip.Addr) redirect.RedirectNodeIp {
	return redirect.RedirectNodeIp{Netns: cookie, Ip: ipKey(ip)}
}

// gateways lists the next hops of the routes in a netns: the node's side of
// the pod's link, where the kubelet's probes come from (bridge and ptp CNIs).
func gateways(ns *os.File) ([]netip.Addr, error) {
	var gws []netip.Addr
	err := netns.Do(ns, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("routes: %w", err)
		}
		add := func(ip net.IP) {
			a, ok := netip.AddrFromSlice(ip)
			if a = a.Unmap(); ok && a.IsValid() && !a.IsUnspecified() && !slices.Contains(gws, a) {
				gws = append(gws, a)
			}
		}
		for _, r := range routes {
			add(r.Gw)
			for _, nh := range r.MultiPath {
				add(nh.Gw)
			}
		}
		return nil
	})
	return gws, err
}

func podInfo(uid string, ips []netip.Addr) redirect.RedirectPodInfo {
	var info redirect.RedirectPodInfo
	for _, ip := range ips {
		ip = ip.Unmap()
		if ip.Is4() {
			w := pins.Words(ip.As16())
			info.Ip4 = w[3]
		} else {
			info.Ip6 = pins.Words(ip.As16())
		}
	}
	for i := 0; i < len(uid) && i < len(info.Uid)-1; i++ {
		info.Uid[i] = int8(uid[i])
	}
	return info
}

func podUID(info *redirect.RedirectPodInfo) string {
	b := make([]byte, 0, len(info.Uid))
	for _, c := range info.Uid {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func podIPs(info *redirect.RedirectPodInfo) []netip.Addr {
	var ips []netip.Addr
	if info.Ip4 != 0 {
		b := pins.Unwords([4]uint32{0, 0, 0, info.Ip4})
		ips = append(ips, netip.AddrFrom4([4]byte(b[12:])))
	}
	if info.Ip6 != [4]uint32{} {
		ips = append(ips, netip.AddrFrom16(pins.Unwords(info.Ip6)))
	}
	return ips
}

func containsAddr(ips []netip.Addr, ip netip.Addr) bool {
	for _, x := range ips {
		if x == ip {
			return true
		}
	}
	return false
}
