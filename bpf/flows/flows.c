//go:build ignore

// SPDX-License-Identifier: Apache-2.0
//
// Warren's kernel flow records: what the TCP stack itself saw of each
// connection an enrolled pod's network namespace opened (bytes each way,
// segments, smoothed and minimum RTT, retransmits, how it ended, how long it
// lasted), sent to user space through a ring buffer.
//
// One sockops program, attached at the cgroup2 root next to (not instead
// of) bpf/redirect's. It returns at once for a socket whose netns is not in
// `enrolled`, which is the redirect object's map, shared by pin: each agent on
// a shared kernel has its own and records only its own pods.
//
// Which sockets count: each TCP connection is recorded once, at its active
// (connecting) end, when that end is in an enrolled netns:
//
//   hop app     the application's own connect() (no tunnel mark); for a
//               redirected one the original destination comes from the
//               redirect object's maps
//   hop tunnel  the tunnel's dial (SO_MARK tunnel_mark, or with SOURCE_MARK_BIT) to another address:
//               HBONE to the peer's node, or passthrough
//
// Not recorded: every passive end (the tunnel's accepted sockets, the apps'
// accepted ones: their active ends are recorded where they were opened) and
// the tunnel's dial to its own pod's app (loopback or the pod's own
// address), which carries the bytes the client's app hop counted already.
// So no byte is counted twice, within a node or across nodes.
//
// A recorded connection ends with an event also when its pod left the mesh
// meanwhile (the close is matched in `flows`, not in `enrolled`).
//
// Counters in struct bpf_sock_ops are read when a callback runs, so the
// final ones are taken at STATE_CB -> TCP_CLOSE; the kernel keeps srtt and
// the minimum RTT itself, so no per-ACK RTT callback is needed.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// The redirect object's maps, reused by pin, and its address types.
#include "warren/shared.h"

#define MAX_FLOWS 65536

// TCP states (include/net/tcp_states.h).
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_CLOSING 11

// Set at load time: the SO_MARK of the tunnel's sockets; 0 treats every socket as an app's.
volatile const __u32 tunnel_mark = 0;

enum flow_hop {
	HOP_APP = 0,
	HOP_TUNNEL = 1,
};

enum flow_kind {
	FLOW_START = 1, // established
	FLOW_END = 2,   // closed
};

// How a flow ended, from the state it left for TCP_CLOSE.
enum flow_end {
	END_NONE = 0,   // a start event
	END_CLOSED = 1, // orderly: FIN both ways
	END_RESET = 2,  // aborted after it was established (RST sent or received, or a timeout)
	END_FAILED = 3, // never established (refused, unreachable, timed out)
};

// A flow in progress, by socket cookie.
struct flow {
	__u64 netns;
	__u64 start_ns;       // TCP_CONNECT_CB (bpf_ktime_get_ns)
	__u64 established_ns; // 0 until established
	struct addr orig;     // original destination of a redirected connection, else zero
	__u32 pod_ip4;        // the pod's addresses (from `enrolled`), network order
	__u32 pod_ip6[4];
	__u8 hop;             // enum flow_hop
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, __u64);
	__type(value, struct flow);
} flows SEC(".maps");

struct flow_event {
	__u64 cookie;
	__u64 netns;
	__u64 start_ns; // connect, bpf_ktime_get_ns (CLOCK_MONOTONIC)
	__u64 time_ns;  // of this event
	__u64 bytes_acked;
	__u64 bytes_received;
	struct addr local;
	struct addr remote;
	struct addr orig; // zero when not redirected
	__u32 pod_ip4;    // the source pod's addresses, network order
	__u32 pod_ip6[4];
	__u32 segs_out;
	__u32 segs_in;
	__u32 srtt_us;
	__u32 rtt_min_us;
	__u32 total_retrans;
	__u8 kind;      // enum flow_kind
	__u8 hop;       // enum flow_hop
	__u8 end;       // enum flow_end
	__u8 old_state; // the state before TCP_CLOSE (end events)
	__u64 established_ns; // 0 if never
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 21); // 2 MiB, about 12k events
} flow_events SEC(".maps");

enum flow_stat {
	STAT_STARTED = 0,  // flows recorded (connect)
	STAT_ENDED = 1,    // end events sent
	STAT_DROPPED = 2,  // events lost: ring buffer full
	STAT_UNTRACKED = 3, // closes of flows no longer in `flows` (evicted by the LRU)
	STAT_MAX = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} flow_stats SEC(".maps");

// Referenced once so bpf2go emits the types (they are used only through pointers).
const struct flow_event *unused_flow_event __attribute__((unused));
const enum flow_hop *unused_flow_hop __attribute__((unused));
const enum flow_kind *unused_flow_kind __attribute__((unused));
const enum flow_end *unused_flow_end __attribute__((unused));
const enum flow_stat *unused_flow_stat __attribute__((unused));

static __always_inline void stat(enum flow_stat s)
{
	__u32 key = s;
	__u64 *n = bpf_map_lookup_elem(&flow_stats, &key);
	if (n)
		*n += 1;
}


// Loopback or the pod's own address: both ends are in the pod's netns.
static __always_inline int is_local(const struct addr *a, const struct pod_info *pod)
{
	if (a->ip6[0] == 0 && a->ip6[1] == 0 && a->ip6[2] == bpf_htonl(0xffff)) {
		__u32 h = bpf_ntohl(a->ip6[3]);
		return (h >> 24) == 127 || h == 0 || a->ip6[3] == pod->ip4;
	}
	if (a->ip6[0] == 0 && a->ip6[1] == 0 && a->ip6[2] == 0 &&
	    (a->ip6[3] == 0 || a->ip6[3] == bpf_htonl(1)))
		return 1;
	return a->ip6[0] == pod->ip6[0] && a->ip6[1] == pod->ip6[1] && a->ip6[2] == pod->ip6[2] &&
	       a->ip6[3] == pod->ip6[3];
}

static __always_inline void fill_event(struct flow_event *e, struct bpf_sock_ops *skops,
				       __u64 cookie, const struct flow *f)
{
	e->cookie = cookie;
	e->netns = f->netns;
	e->start_ns = f->start_ns;
	e->established_ns = f->established_ns;
	e->time_ns = bpf_ktime_get_ns();
	sockops_addrs(skops, &e->local, &e->remote);
	e->orig = f->orig;
	e->pod_ip4 = f->pod_ip4;
	__builtin_memcpy(e->pod_ip6, f->pod_ip6, sizeof(e->pod_ip6));
	e->hop = f->hop;
	e->bytes_acked = skops->bytes_acked;
	e->bytes_received = skops->bytes_received;
	e->segs_out = skops->segs_out;
	e->segs_in = skops->segs_in;
	e->srtt_us = skops->srtt_us >> 3; // the kernel keeps it times 8
	e->rtt_min_us = skops->rtt_min;
	e->total_retrans = skops->total_retrans;
}

// Wake the reader only when the data waiting crosses this mark: a wakeup
// per event (or per event past the mark, while the reader is on its way)
// costs more than the program itself. The reader polls every 100 ms anyway.
#define WAKEUP_BYTES (64 * 1024)
#define RECORD_BYTES ((sizeof(struct flow_event) + 8 + 7) / 8 * 8) // with the ring's header

static __always_inline void submit(struct flow_event *e)
{
	__u64 avail = bpf_ringbuf_query(&flow_events, BPF_RB_AVAIL_DATA);
	__u64 flags = avail >= WAKEUP_BYTES && avail < WAKEUP_BYTES + RECORD_BYTES
			      ? BPF_RB_FORCE_WAKEUP
			      : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

// The flags this program needs. RETRANS_CB also tells bpf/redirect, which
// drops STATE_CB from a redirected socket once it is established, that
// another program still follows the socket's state.
#define FLOW_CB_FLAGS (BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG)

// At STATE_CB -> TCP_CLOSE: the end event, with the final counters.
static __always_inline int flow_closed(struct bpf_sock_ops *skops, __u64 cookie, __u64 netns)
{
	struct flow *f = bpf_map_lookup_elem(&flows, &cookie);
	if (!f) {
		// Not ours (another program asked for STATE_CB), or evicted:
		// ours if it is in an enrolled netns and flagged as we flag.
		if ((skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_RETRANS_CB_FLAG) &&
		    bpf_map_lookup_elem(&enrolled, &netns))
			stat(STAT_UNTRACKED);
		return 1;
	}
	struct flow_event *e = bpf_ringbuf_reserve(&flow_events, sizeof(*e), 0);
	if (!e) {
		stat(STAT_DROPPED);
		bpf_map_delete_elem(&flows, &cookie);
		return 1;
	}
	fill_event(e, skops, cookie, f);
	__u32 old = skops->args[0];
	// bytes_acked and bytes_received count sequence space, which
	// the SYN and the FINs take one of each: keep the data.
	// Our FIN was sent in these states, and acked if nothing is
	// outstanding; the peer's arrived in these (FIN_WAIT2 -> CLOSE
	// is the time-wait hand-over: it is wrong only after an orphan's
	// FIN_WAIT2 timeout, when the peer never closed).
	__u64 ctl_out = f->established_ns ? 1 : 0;
	if (old == TCP_FIN_WAIT2 ||
	    ((old == TCP_FIN_WAIT1 || old == TCP_CLOSING || old == TCP_LAST_ACK) &&
	     skops->snd_una == skops->snd_nxt))
		ctl_out++;
	__u64 ctl_in = old == TCP_FIN_WAIT2 || old == TCP_CLOSE_WAIT || old == TCP_CLOSING ||
			       old == TCP_LAST_ACK
			   ? 1
			   : 0;
	e->bytes_acked = e->bytes_acked > ctl_out ? e->bytes_acked - ctl_out : 0;
	e->bytes_received = e->bytes_received > ctl_in ? e->bytes_received - ctl_in : 0;
	e->kind = FLOW_END;
	e->old_state = old;
	if (old == TCP_SYN_SENT || !f->established_ns)
		e->end = END_FAILED;
	else if (old == TCP_FIN_WAIT2 || old == TCP_LAST_ACK || old == TCP_CLOSING ||
		 old == TCP_TIME_WAIT)
		e->end = END_CLOSED;
	else
		e->end = END_RESET;
	bpf_map_delete_elem(&flows, &cookie);
	submit(e);
	stat(STAT_ENDED);
	return 1;
}

SEC("sockops")
int warren_flows(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	__u64 netns = bpf_get_netns_cookie(skops);
	__u64 cookie;
	if (op == BPF_SOCK_OPS_STATE_CB) {
		// Only sockets some program asked STATE_CB for get here. Ours
		// are in `flows`, also after their pod left the mesh.
		if (skops->args[1] != TCP_CLOSE)
			return 1;
		cookie = bpf_get_socket_cookie(skops);
		return flow_closed(skops, cookie, netns);
	}
	struct pod_info *pod = bpf_map_lookup_elem(&enrolled, &netns);
	if (!pod)
		return 1;
	cookie = bpf_get_socket_cookie(skops);

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: {
		struct flow f = {};
		f.netns = netns;
		f.start_ns = bpf_ktime_get_ns();
		f.pod_ip4 = pod->ip4;
		__builtin_memcpy(f.pod_ip6, pod->ip6, sizeof(f.pod_ip6));
		struct bpf_sock *sk = skops->sk;
		if (sk && tunnel_marked(sk->mark, tunnel_mark)) {
			struct addr local, remote;
			sockops_addrs(skops, &local, &remote);
			if (is_local(&remote, pod))
				return 1; // the tunnel delivering to its own pod's app
			f.hop = HOP_TUNNEL;
		}
		if (bpf_map_update_elem(&flows, &cookie, &f, BPF_ANY))
			return 1;
		stat(STAT_STARTED);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | FLOW_CB_FLAGS);
		break;
	}

	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct flow *f = bpf_map_lookup_elem(&flows, &cookie);
		if (!f)
			break;
		f->established_ns = bpf_ktime_get_ns();
		struct flow_event *e = bpf_ringbuf_reserve(&flow_events, sizeof(*e), 0);
		struct addr local, remote;
		sockops_addrs(skops, &local, &remote);
		if (f->hop == HOP_APP) {
			// Redirected (to the tunnel's port of the moment, see
			// redirect's tunnel_ports): whichever of the two sockops
			// programs runs first, the original destination is in one of
			// these; a connection that was not redirected is in neither.
			struct addr *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
			if (!orig) {
				struct tuple key = {};
				key.netns = netns;
				key.src = local;
				key.dst = remote;
				orig = bpf_map_lookup_elem(&orig_by_tuple, &key);
			}
			if (orig)
				f->orig = *orig;
		}
		if (!e) {
			stat(STAT_DROPPED);
			break;
		}
		fill_event(e, skops, cookie, f);
		e->bytes_acked = 0; // the SYN's
		e->kind = FLOW_START;
		e->end = END_NONE;
		e->old_state = TCP_ESTABLISHED;
		submit(e);
		break;
	}
	}
	return 1;
}

char __license[] SEC("license") = "Apache-2.0";
