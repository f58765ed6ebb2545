package nodeagent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/bpf/flows"
	"github.com/warrenmesh/warren/bpf/redirect/pins"
)

// FlowOptions configure a FlowCollector.
type FlowOptions struct {
	// Options are the agent's: Node, BPFFS, PinDir, Cgroup, TunnelMark,
	// Logger and Registerer mean what they mean for Open.
	Options
	// Pods names the pods behind flow addresses; every pod is unknown if nil.
	Pods PodResolver
	// TrustDomain of the SPIFFE identities; "cluster.local" if empty.
	TrustDomain string
}

// FlowCollector records the TCP connections enrolled pods open, from the
// kernel (bpf/flows): metrics by workload, and a live event stream.
type FlowCollector struct {
	opts    FlowOptions
	log     *slog.Logger
	metrics *flowMetrics
	stats   *flowStatsCollector
	hub     flowHub
	// monoToWall turns bpf_ktime_get_ns (CLOCK_MONOTONIC) into wall time.
	monoToWall int64

	mu     sync.Mutex
	closed bool
	objs   flows.FlowsObjects
	link   link.Link
	reader *ringbuf.Reader
}

// The flow object's pinned maps: the first three are the redirect object's
// (same name, same definition), shared by pin; the rest are its own.
var (
	flowSharedMaps = []string{flows.FlowsMapEnrolled, flows.FlowsMapOrigByCookie, flows.FlowsMapOrigByTuple}
	flowOwnMaps    = []string{flows.FlowsMapFlows, flows.FlowsMapFlowEvents, flows.FlowsMapFlowStats}
)

// flowPollInterval bounds how late a flow event reaches the stream and the metrics.
const flowPollInterval = 100 * time.Millisecond

// flowsLinkName is the sockops link's pin under <PinDir>/links.
const flowsLinkName = "flows_sockops"

// OpenFlows loads bpf/flows, with the maps it shares with the redirect
// programs taken from their pins (or pinned for them, when it comes first),
// and attaches its sockops program at the cgroup2 root next to redirect's,
// or adopts the link a previous agent pinned. Run reads its events.
func OpenFlows(opts FlowOptions) (*FlowCollector, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.Cgroup == "" {
		cg, err := Cgroup2Root()
		if err != nil {
			return nil, err
		}
		opts.Cgroup = cg
	} else {
		// The same directory the redirect programs attach to (a hybrid
		// host's tree mounted whole: its unified/).
		cg, err := ResolveCgroup2(opts.Cgroup)
		if err != nil {
			return nil, err
		}
		opts.Cgroup = cg
	}
	if err := ensureBPFFS(opts.BPFFS); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.PinDir, linksDir), 0o700); err != nil {
		return nil, fmt.Errorf("pin dir: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, fmt.Errorf("clock: %w", err)
	}
	c := &FlowCollector{
		opts:       opts,
		log:        opts.Logger.With("node", opts.Node, "component", "flows"),
		metrics:    newFlowMetrics(),
		monoToWall: time.Now().UnixNano() - ts.Nano(),
	}
	c.hub.dropped = func() { c.metrics.events.WithLabelValues("subscriber_dropped").Inc() }
	if err := c.load(); err != nil {
		return nil, err
	}
	if err := c.attach(); err != nil {
		c.objs.Close()
		return nil, err
	}
	r, err := ringbuf.NewReader(c.objs.FlowEvents)
	if err != nil {
		c.closeHandles()
		return nil, fmt.Errorf("ring buffer: %w", err)
	}
	c.reader = r
	c.stats = &flowStatsCollector{c: c,
		kernelDesc: prometheus.NewDesc("warren_agent_flow_kernel_events_total",
			"What the flow program did, by result: started (a flow recorded), ended (its end event sent), dropped (an event lost, ring buffer full), untracked (a close whose flow had been evicted from the flow table).",
			[]string{"result"}, nil),
		entriesDesc: prometheus.NewDesc("warren_agent_flow_table_entries",
			"Flows in progress in the kernel's flow table (bounded, LRU).", nil, nil),
	}
	if opts.Registerer != nil {
		for _, col := range append(c.metrics.collectors(), c.stats) {
			if err := opts.Registerer.Register(col); err != nil {
				c.unregister()
				c.closeHandles()
				return nil, fmt.Errorf("flow metrics: %w", err)
			}
		}
	}
	c.log.Info("flow collector ready", "pin_dir", opts.PinDir, "cgroup", opts.Cgroup)
	return c, nil
}

func (c *FlowCollector) load() error {
	spec, err := flows.LoadFlows()
	if err != nil {
		return err
	}
	for _, name := range append(append([]string{}, flowSharedMaps...), flowOwnMaps...) {
		spec.Maps[name].Pinning = ebpf.PinByName
	}
	if err := spec.Variables[flows.FlowsVarTunnelMark].Set(c.opts.TunnelMark); err != nil {
		return fmt.Errorf("variable %s: %w", flows.FlowsVarTunnelMark, err)
	}
	err = spec.LoadAndAssign(&c.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: c.opts.PinDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("flows: load: maps pinned in %s by another version do not match (uninstall first): %w", c.opts.PinDir, err)
	}
	if err != nil {
		return fmt.Errorf("flows: load: %w", err)
	}
	return nil
}

func (c *FlowCollector) attach() error {
	pin := filepath.Join(c.opts.PinDir, linksDir, flowsLinkName)
	l, err := adoptLink(pin, c.objs.WarrenFlows)
	if err != nil {
		c.log.Warn("pinned link not adopted, attaching anew", "link", flowsLinkName, "err", err)
	}
	if l == nil {
		l, err = link.AttachCgroup(link.CgroupOptions{Path: c.opts.Cgroup, Attach: ebpf.AttachCGroupSockOps, Program: c.objs.WarrenFlows})
		if err != nil {
			return fmt.Errorf("program flows: attach to cgroup %s: %w", c.opts.Cgroup, err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("program flows: %w", err)
		}
	}
	c.link = l
	return nil
}

// Run reads flow events until ctx ends or the collector is closed: each
// one is resolved to workloads, counted in the metrics (end events) and
// sent to the subscribers.
func (c *FlowCollector) Run(ctx context.Context) error {
	c.mu.Lock()
	r := c.reader
	c.mu.Unlock()
	if r == nil {
		return ErrClosed
	}
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	var (
		rec       ringbuf.Record
		raw       flows.FlowsFlowEvent
		read      = c.metrics.events.WithLabelValues("read")
		malformed = c.metrics.events.WithLabelValues("malformed")
	)
	for {
		// The program wakes the reader only when a lot is waiting
		// (WAKEUP_BYTES in flows.c): poll at least this often.
		r.SetDeadline(time.Now().Add(flowPollInterval))
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("flows: ring buffer: %w", err)
		}
		if len(rec.RawSample) < int(unsafe.Sizeof(raw)) {
			malformed.Inc()
			continue
		}
		// The sample is the C struct, which the generated one mirrors
		// (host layout, little-endian); the ring keeps it 8-byte aligned.
		raw = *(*flows.FlowsFlowEvent)(unsafe.Pointer(&rec.RawSample[0]))
		read.Inc()
		if raw.Kind == uint8(flows.FlowsFlowKindFLOW_START) && !c.hub.active() {
			continue // start events count nothing: only subscribers want them
		}
		ev := c.event(&raw)
		c.metrics.observe(&ev)
		c.hub.publish(&ev)
	}
}

// Subscribe returns every flow event from now on that filter accepts (all
// if nil), until cancel is called. A subscriber more than
// FlowSubscriberBuffer events behind loses the newer ones.
func (c *FlowCollector) Subscribe(filter func(*FlowEvent) bool) (events <-chan FlowEvent, cancel func()) {
	return c.hub.subscribe(filter)
}

func (c *FlowCollector) event(r *flows.FlowsFlowEvent) FlowEvent {
	wall := func(ns uint64) time.Time {
		if ns == 0 {
			return time.Time{}
		}
		return time.Unix(0, c.monoToWall+int64(ns))
	}
	e := FlowEvent{
		Kind:          FlowStart,
		Cookie:        r.Cookie,
		Hop:           HopApp,
		Local:         flowAddr(r.Local),
		Remote:        flowAddr(r.Remote),
		Start:         wall(r.StartNs),
		Established:   wall(r.EstablishedNs),
		Time:          wall(r.TimeNs),
		BytesSent:     r.BytesAcked,
		BytesReceived: r.BytesReceived,
		SegmentsSent:  r.SegsOut,
		SegmentsIn:    r.SegsIn,
		SRTT:          time.Duration(r.SrttUs) * time.Microsecond,
		MinRTT:        time.Duration(r.RttMinUs) * time.Microsecond,
		Retransmits:   r.TotalRetrans,
	}
	if r.Kind == uint8(flows.FlowsFlowKindFLOW_END) {
		e.Kind = FlowEnd
		switch flows.FlowsFlowEnd(r.End) {
		case flows.FlowsFlowEndEND_CLOSED:
			e.End = EndClosed
		case flows.FlowsFlowEndEND_RESET:
			e.End = EndReset
		default:
			e.End = EndFailed
		}
	}
	if r.Hop == uint8(flows.FlowsFlowHopHOP_TUNNEL) {
		e.Hop = HopTunnel
	}
	e.Destination = e.Remote
	if orig := flowAddr(r.Orig); orig.Port() != 0 {
		e.Destination = orig
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], r.PodIp4)
	ip4, ip6 := netip.AddrFrom4(b), netip.AddrFrom16(pins.Unwords(r.PodIp6))
	switch {
	case ip6.IsUnspecified() || (e.Destination.Addr().Is4() && !ip4.IsUnspecified()):
		e.SourceIP = ip4
	default:
		e.SourceIP = ip6
	}
	if c.opts.Pods != nil {
		for _, ip := range []netip.Addr{ip4, ip6} {
			if ip.IsUnspecified() {
				continue
			}
			if p, ok := c.opts.Pods.PodByIP(ip); ok {
				e.SourcePod = p
				break
			}
		}
		if p, ok := c.opts.Pods.PodByIP(e.Destination.Addr()); ok {
			e.DestinationPod = p
		}
	}
	if e.SourcePod.Identity == "" {
		e.SourcePod.SetIdentity(c.opts.TrustDomain)
	}
	if e.DestinationPod.Identity == "" {
		e.DestinationPod.SetIdentity(c.opts.TrustDomain)
	}
	return e
}

func flowAddr(a flows.FlowsAddr) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(pins.Unwords(a.Ip6)).Unmap(), a.Port)
}

// FlowTableEntries counts the flows in progress in the kernel's table.
func (c *FlowCollector) FlowTableEntries() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	return countEntries(c.objs.Flows)
}

// kernelStats sums the program's per-CPU counters, by enum flow_stat.
func (c *FlowCollector) kernelStats() ([flows.FlowsFlowStatSTAT_MAX]uint64, error) {
	var out [flows.FlowsFlowStatSTAT_MAX]uint64
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return out, ErrClosed
	}
	for i := range out {
		key := uint32(i)
		var perCPU []uint64
		if err := c.objs.FlowStats.Lookup(&key, &perCPU); err != nil {
			return out, fmt.Errorf("map flow_stats: %w", err)
		}
		for _, n := range perCPU {
			out[i] += n
		}
	}
	return out, nil
}

// Close stops reading and releases the collector's handles; the program
// stays attached and pinned, recording into the pinned maps for the next agent.
func (c *FlowCollector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.unregister()
	return c.closeHandles()
}

// Uninstall detaches the flow program and removes its pins (its link and its
// own maps; the maps it shares with the redirect programs are theirs), and closes.
func (c *FlowCollector) Uninstall() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.closed = true
	c.unregister()
	errs := []error{c.link.Unpin()}
	for _, m := range []*ebpf.Map{c.objs.Flows, c.objs.FlowEvents, c.objs.FlowStats} {
		errs = append(errs, m.Unpin())
	}
	errs = append(errs, c.closeHandles())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("flows: uninstall: %w", err)
	}
	return nil
}

func (c *FlowCollector) unregister() {
	if c.opts.Registerer == nil {
		return
	}
	for _, col := range c.metrics.collectors() {
		c.opts.Registerer.Unregister(col)
	}
	if c.stats != nil {
		c.opts.Registerer.Unregister(c.stats)
	}
}

func (c *FlowCollector) closeHandles() error {
	var errs []error
	if c.reader != nil {
		errs = append(errs, c.reader.Close())
	}
	if c.link != nil {
		errs = append(errs, c.link.Close())
	}
	errs = append(errs, c.objs.Close())
	return errors.Join(errs...)
}

type flowStatsCollector struct {
	c                       *FlowCollector
	kernelDesc, entriesDesc *prometheus.Desc
}

func (s *flowStatsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.kernelDesc
	ch <- s.entriesDesc
}

func (s *flowStatsCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := s.c.kernelStats()
	if err != nil {
		return
	}
	for i, name := range flows.StatNames {
		ch <- prometheus.MustNewConstMetric(s.kernelDesc, prometheus.CounterValue, float64(st[i]), name)
	}
	if n, err := s.c.FlowTableEntries(); err == nil {
		ch <- prometheus.MustNewConstMetric(s.entriesDesc, prometheus.GaugeValue, float64(n))
	}
}
