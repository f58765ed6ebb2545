//go:build ignore

// SPDX-License-Identifier: Apache-2.0
//
// Warren's traffic redirection. Every program first looks up the socket's
// network namespace in the `enrolled` map and returns at once when it is not
// there: the programs are attached at the cgroup2 root, which every process on
// the machine (and every "node" sharing this kernel) goes through.
//
//   cgroup/connect4, cgroup/connect6  outbound TCP of an enrolled pod goes to
//                                     the current tunnel's listener on 127.0.0.1
//                                     / [::1], at the port `tunnel_ports` gives
//                                     for the netns (15001 without an entry);
//                                     the original destination is kept by socket cookie
//   sockops                           at ACTIVE_ESTABLISHED the original destination
//                                     moves to a (netns, 4-tuple) key the tunnel can
//                                     compute from its accepted socket; removed when
//                                     the tunnel's side of the connection closes
//   sk_lookup (per pod netns)         inbound TCP to the pod: port 15008 to the
//                                     tunnel's HBONE socket, any other to its 15006 one;
//                                     it finds the pod by address in `pod_ips`;
//                                     connections from the node itself (the
//                                     kubelet's probes) pass straight to the app

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "warren/shared.h" // pod_info, addr, tuple, enrolled, orig_by_*, sockops_addrs

// From the socket headers, which do not compile for the BPF target (AF_INET
// is in warren/shared.h).
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

// The pod ports as connections see them (Go: bpf/redirect's PortOutbound,
// PortInbound, PortHBONE, generated from this enum).
enum port {
	PORT_OUTBOUND = 15001, // outbound without a tunnel_ports entry: nothing listens, refused
	PORT_INBOUND = 15006,  // plaintext inbound, steered to the tunnel's inbound listener
	PORT_HBONE = 15008,    // HBONE, steered to the tunnel's HBONE listener
};

// Set at load time. A socket with this mark (SO_MARK) belongs to the tunnel
// and is never redirected; 0 disables the check.
volatile const __u32 tunnel_mark = 0;

// An IP address as IPv6, IPv4 as v4-mapped.
struct ip {
	__u32 ip6[4];
};

enum sock_kind {
	SOCK_KIND_INBOUND = 0, // the tunnel's plaintext listener, port 15006
	SOCK_KIND_HBONE = 1,   // the tunnel's HBONE listener, port 15008
};

struct sock_key {
	__u64 netns;
	enum sock_kind kind;
	__u32 pad;
};

enum prog_id {
	PROG_CONNECT4 = 0,
	PROG_CONNECT6 = 1,
	PROG_SOCKOPS = 2,
	PROG_SK_LOOKUP = 3,
	PROG_MAX = 4,
};

enum action {
	ACTION_REDIRECTED = 0,
	ACTION_BYPASSED = 1,
	ACTION_ERROR = 2,
	ACTION_MAX = 3,
};

// Go reads these enums (bpf2go -type, see gen.go); a pointer to each puts it
// in the object's BTF. The programs never use them.
const enum port *unused_port __attribute__((unused));
const enum mark_bits *unused_mark_bits __attribute__((unused));
const enum prog_id *unused_prog_id __attribute__((unused));
const enum action *unused_action __attribute__((unused));

// Enrolled pods' addresses, to their netns cookie: how sk_lookup, which has no
// netns cookie, tells an enrolled pod's traffic.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_PODS);
	__type(key, struct ip);
	__type(value, __u64);
} pod_ips SEC(".maps");

// A node-local address of an enrolled pod: where the node reaches the pod
// from (its gateway on the pod's link, the node's own address).
struct node_ip {
	__u64 netns;
	struct ip ip;
};

// Node-local addresses per enrolled pod. Connections from them are the
// kubelet's probes (and anything else on the node's network namespace): they
// pass to the app, unsteered, in STRICT mode too, or every probe would fail.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * MAX_PODS);
	__type(key, struct node_ip);
	__type(value, __u8);
} node_ips SEC(".maps");

// The current tunnel's outbound listener ports in a pod's netns, host order.
// Each tunnel generation listens on ports of its own; writing its entry
// switches the pod's new connections to it at once, while the previous
// generation still accepts what was already queued for it.
struct outbound_ports {
	__u16 port4; // on 127.0.0.1
	__u16 port6; // on [::1]; 0 when the pod has no IPv6 address
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PODS);
	__type(key, __u64);
	__type(value, struct outbound_ports);
} tunnel_ports SEC(".maps");

// A connection to a pod's app, from the app's side.
struct app_conn {
	struct addr app;    // the pod's address and the app's port
	struct addr client; // the client's address and port
};

// The tunnel's connections to apps from a client's address (SO_MARK
// tunnel_mark | SOURCE_MARK_BIT, IP_TRANSPARENT), from connect() until
// established or closed: sk_lookup passes their SYN to the app instead of
// steering it back to the tunnel. sk_lookup has no socket mark to tell them
// by, nor a way to tell a SYN made in the netns from one that came in: this
// is the exact 4-tuple of a socket the tunnel holds. LRU: an entry whose
// close was missed cannot crowd out new ones.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, struct app_conn);
	__type(value, __u8);
} tunnel_syns SEC(".maps");

// The tunnel's listeners inside each enrolled pod's netns.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2 * MAX_PODS);
	__type(key, struct sock_key);
	__type(value, __u64);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROG_MAX *ACTION_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(enum prog_id prog, enum action action)
{
	__u32 key = prog * ACTION_MAX + action;
	__u64 *n = bpf_map_lookup_elem(&counters, &key);
	if (n)
		*n += 1;
}

static __always_inline int is_loopback4(__u32 ip4)
{
	__u32 h = bpf_ntohl(ip4);
	return (h >> 24) == 127 || h == 0;
}

static __always_inline int is_v4mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

static __always_inline int is_loopback6(const __u32 ip6[4])
{
	if (ip6[0] != 0 || ip6[1] != 0)
		return 0;
	if (ip6[2] == bpf_htonl(0xffff))
		return is_loopback4(ip6[3]);
	return ip6[2] == 0 && (ip6[3] == 0 || ip6[3] == bpf_htonl(1));
}

static __always_inline int is_tunnel(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	return sk && tunnel_marked(sk->mark, tunnel_mark);
}

// Whether a sockops socket is the tunnel's, connecting from a client's address.
static __always_inline int from_client_address(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	return tunnel_mark != 0 && sk && sk->mark == (tunnel_mark | SOURCE_MARK_BIT);
}

static const __u8 one = 1;

// The port the current tunnel listens on for this netns: without an entry,
// 15001, where no tunnel listens any more, so the connection is refused
// (fail closed).
static __always_inline __u16 outbound_port(__u64 netns, int v6)
{
	struct outbound_ports *p = bpf_map_lookup_elem(&tunnel_ports, &netns);
	if (!p)
		return PORT_OUTBOUND;
	__u16 port = v6 ? p->port6 : p->port4;
	return port ? port : PORT_OUTBOUND;
}

SEC("cgroup/connect4")
int warren_connect4(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	struct pod_info *pod = bpf_map_lookup_elem(&enrolled, &netns);
	if (!pod)
		return 1;

	__u32 dst = ctx->user_ip4;
	if (ctx->type != SOCK_STREAM || is_tunnel(ctx) || is_loopback4(dst) || dst == pod->ip4) {
		count(PROG_CONNECT4, ACTION_BYPASSED);
		return 1;
	}

	struct addr orig = {};
	set_v4(orig.ip6, dst);
	orig.port = bpf_ntohs((__u16)ctx->user_port);
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, &orig, BPF_ANY)) {
		// Fail closed: without its original destination the tunnel could
		// not carry the connection, and it must not leave unredirected.
		count(PROG_CONNECT4, ACTION_ERROR);
		return 0;
	}
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(outbound_port(netns, 0));
	count(PROG_CONNECT4, ACTION_REDIRECTED);
	return 1;
}

SEC("cgroup/connect6")
int warren_connect6(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	struct pod_info *pod = bpf_map_lookup_elem(&enrolled, &netns);
	if (!pod)
		return 1;

	__u32 dst[4];
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	int mapped = is_v4mapped(dst);
	int own = mapped ? dst[3] == pod->ip4
			 : dst[0] == pod->ip6[0] && dst[1] == pod->ip6[1] &&
				   dst[2] == pod->ip6[2] && dst[3] == pod->ip6[3];
	if (ctx->type != SOCK_STREAM || is_tunnel(ctx) || is_loopback6(dst) || own) {
		count(PROG_CONNECT6, ACTION_BYPASSED);
		return 1;
	}

	struct addr orig = {};
	orig.ip6[0] = dst[0];
	orig.ip6[1] = dst[1];
	orig.ip6[2] = dst[2];
	orig.ip6[3] = dst[3];
	orig.port = bpf_ntohs((__u16)ctx->user_port);
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, &orig, BPF_ANY)) {
		count(PROG_CONNECT6, ACTION_ERROR);
		return 0;
	}
	if (mapped) {
		// A v4-mapped destination stays IPv4 on the wire: send it to the
		// tunnel's IPv4 listener.
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(outbound_port(netns, !mapped));
	count(PROG_CONNECT6, ACTION_REDIRECTED);
	return 1;
}

SEC("sockops")
int warren_sockops(struct bpf_sock_ops *skops)
{
	// Most callbacks (RTO, RWND and ECN queries, ...) are not ours: leave
	// before any lookup, since this runs several times for every TCP
	// connection on the machine.
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	__u64 netns = bpf_get_netns_cookie(skops);
	if (!bpf_map_lookup_elem(&enrolled, &netns))
		return 1;

	__u64 cookie;
	struct tuple key = {};
	key.netns = netns;

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: {
		// Follow a redirected socket's state only until it is
		// established, to drop its entry if it never is.
		cookie = bpf_get_socket_cookie(skops);
		if (bpf_map_lookup_elem(&orig_by_cookie, &cookie))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
								BPF_SOCK_OPS_STATE_CB_FLAG);
		// The tunnel connecting to an app from a client's address: its
		// SYN is about to leave (see tunnel_syns).
		if (from_client_address(skops)) {
			struct app_conn conn = {};
			sockops_addrs(skops, &conn.client, &conn.app);
			if (bpf_map_update_elem(&tunnel_syns, &conn, &one, BPF_ANY)) {
				count(PROG_SOCKOPS, ACTION_ERROR);
				break;
			}
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
								BPF_SOCK_OPS_STATE_CB_FLAG);
		}
		break;
	}

	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		if (from_client_address(skops)) {
			struct app_conn conn = {};
			sockops_addrs(skops, &conn.client, &conn.app);
			bpf_map_delete_elem(&tunnel_syns, &conn);
			__u32 flags = skops->bpf_sock_ops_cb_flags;
			if (!(flags & BPF_SOCK_OPS_RETRANS_CB_FLAG))
				bpf_sock_ops_cb_flags_set(skops, flags & ~BPF_SOCK_OPS_STATE_CB_FLAG);
			break;
		}
		// Runs before the handshake's last ACK leaves, so the entry is
		// there before the tunnel can accept the connection.
		cookie = bpf_get_socket_cookie(skops);
		struct addr *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
		if (!orig)
			break;
		sockops_addrs(skops, &key.src, &key.dst);
		if (bpf_map_update_elem(&orig_by_tuple, &key, orig, BPF_ANY))
			count(PROG_SOCKOPS, ACTION_ERROR);
		else
			count(PROG_SOCKOPS, ACTION_REDIRECTED);
		bpf_map_delete_elem(&orig_by_cookie, &cookie);
		// Done with its state, unless another program follows it too:
		// bpf/flows marks the sockets it records with RETRANS_CB.
		__u32 flags = skops->bpf_sock_ops_cb_flags;
		if (!(flags & BPF_SOCK_OPS_RETRANS_CB_FLAG))
			bpf_sock_ops_cb_flags_set(skops, flags & ~BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}

	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		// The tunnel's side of a redirected connection: its close ends
		// the entry's life (not the client's, which may close first
		// while its data still waits in the tunnel's accept queue). It
		// is told by its entry, not by its port: every tunnel generation
		// listens on ports of its own, and an old one's connections
		// outlive its entry in tunnel_ports. Redirected connections are
		// on loopback; others pay no lookup.
		struct addr local = {};
		struct addr remote = {};
		sockops_addrs(skops, &local, &remote);
		if (!is_loopback6(local.ip6))
			break;
		key.src = remote;
		key.dst = local;
		if (bpf_map_lookup_elem(&orig_by_tuple, &key))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
								BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}

	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		// Either the tunnel's side of a redirected connection (its
		// entry by tuple) or a client socket that never got established
		// (its entry by cookie): the other key matches nothing.
		sockops_addrs(skops, &key.dst, &key.src);
		bpf_map_delete_elem(&orig_by_tuple, &key);
		cookie = bpf_get_socket_cookie(skops);
		bpf_map_delete_elem(&orig_by_cookie, &cookie);
		// Or the tunnel's connection from a client's address that never
		// got established.
		if (from_client_address(skops)) {
			struct app_conn conn = {};
			conn.client = key.dst;
			conn.app = key.src;
			bpf_map_delete_elem(&tunnel_syns, &conn);
		}
		break;
	}
	return 1;
}

SEC("sk_lookup")
int warren_sk_lookup(struct bpf_sk_lookup *ctx)
{
	// sk_lookup cannot read its netns cookie: the pod is found by its own
	// address, the packet's destination.
	struct ip local = {};
	struct node_ip remote = {};
	int own;
	if (ctx->family == AF_INET) {
		set_v4(local.ip6, ctx->local_ip4);
		set_v4(remote.ip.ip6, ctx->remote_ip4);
		own = ctx->remote_ip4 == ctx->local_ip4;
	} else {
		local.ip6[0] = ctx->local_ip6[0];
		local.ip6[1] = ctx->local_ip6[1];
		local.ip6[2] = ctx->local_ip6[2];
		local.ip6[3] = ctx->local_ip6[3];
		remote.ip.ip6[0] = ctx->remote_ip6[0];
		remote.ip.ip6[1] = ctx->remote_ip6[1];
		remote.ip.ip6[2] = ctx->remote_ip6[2];
		remote.ip.ip6[3] = ctx->remote_ip6[3];
		own = remote.ip.ip6[0] == local.ip6[0] && remote.ip.ip6[1] == local.ip6[1] &&
		      remote.ip.ip6[2] == local.ip6[2] && remote.ip.ip6[3] == local.ip6[3];
	}
	__u64 *netns = bpf_map_lookup_elem(&pod_ips, &local);
	if (!netns)
		return SK_PASS;

	// The pod's connections to itself stay as they are (its loopback ones
	// never get here: 127.0.0.1 and ::1 are no pod's address).
	if (ctx->protocol != IPPROTO_TCP || own) {
		count(PROG_SK_LOOKUP, ACTION_BYPASSED);
		return SK_PASS;
	}
	// So do the tunnel's, from a client's address: see tunnel_syns.
	struct app_conn conn = {};
	__builtin_memcpy(conn.app.ip6, local.ip6, sizeof(conn.app.ip6));
	conn.app.port = (__u16)ctx->local_port;
	__builtin_memcpy(conn.client.ip6, remote.ip.ip6, sizeof(conn.client.ip6));
	conn.client.port = bpf_ntohs(ctx->remote_port);
	if (bpf_map_lookup_elem(&tunnel_syns, &conn)) {
		count(PROG_SK_LOOKUP, ACTION_BYPASSED);
		return SK_PASS;
	}
	// So do the node's own (the kubelet's probes): see node_ips.
	remote.netns = *netns;
	if (bpf_map_lookup_elem(&node_ips, &remote)) {
		count(PROG_SK_LOOKUP, ACTION_BYPASSED);
		return SK_PASS;
	}

	struct sock_key key = {};
	key.netns = *netns;
	key.kind = ctx->local_port == PORT_HBONE ? SOCK_KIND_HBONE : SOCK_KIND_INBOUND;
	struct bpf_sock *sk = bpf_map_lookup_elem(&sockets, &key);
	if (!sk) {
		// Fail closed: no tunnel listener, no plaintext way in.
		count(PROG_SK_LOOKUP, ACTION_ERROR);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(PROG_SK_LOOKUP, ACTION_ERROR);
		return SK_DROP;
	}
	count(PROG_SK_LOOKUP, ACTION_REDIRECTED);
	return SK_PASS;
}

char __license[] SEC("license") = "Apache-2.0";
