// SPDX-License-Identifier: Apache-2.0
//
// What bpf/redirect and bpf/flows share: the pod and address types, the maps
// the flow object reuses from the redirect object by pin (so their
// definitions must be the same, and are this one), and the sockops address
// reader. Include after the libbpf headers.

#ifndef WARREN_SHARED_H
#define WARREN_SHARED_H

#define MAX_PODS 4096
#define MAX_CONNS 65536
#define UID_LEN 64

// An enrolled pod, by the cookie of its network namespace.
struct pod_info {
	__u32 ip4;    // network order; 0 when the pod has no IPv4 address
	__u32 ip6[4]; // network order; all zero when the pod has no IPv6 address
	char uid[UID_LEN];
};

// An address as IPv6, IPv4 as v4-mapped (::ffff:a.b.c.d); port in host order.
struct addr {
	__u32 ip6[4];
	__u16 port;
	__u16 pad;
};

// A connection as the tunnel sees it from its accepted socket: src is the
// client (the peer), dst is the tunnel's listener.
struct tuple {
	__u64 netns;
	struct addr src;
	struct addr dst;
};

// Enrolled pods by netns cookie: every program returns at once for a netns
// that is not here.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PODS);
	__type(key, __u64);
	__type(value, struct pod_info);
} enrolled SEC(".maps");

// Original destination by socket cookie, from connect() to ACTIVE_ESTABLISHED.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, __u64);
	__type(value, struct addr);
} orig_by_cookie SEC(".maps");

// Original destination by (netns, tunnel-side 4-tuple), for the tunnel.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, struct tuple);
	__type(value, struct addr);
} orig_by_tuple SEC(".maps");

// Reads a context field exactly once, where written: clang otherwise merges
// loads from different fields into one through a computed context pointer,
// which the verifier refuses.
#define CTX_READ(x) (*(volatile typeof(x) *)&(x))

// A tunnel socket connecting from a client's address (IP_TRANSPARENT, the
// last hop to an app) carries the tunnel's mark with this bit added, so the
// pod's policy routing can keep the app's replies in (internal/podroute; Go:
// bpf/redirect's SourceMarkBit, generated from this enum).
enum mark_bits {
	SOURCE_MARK_BIT = 0x10000,
};

// Whether a socket mark is the tunnel's (tunnel: its mark, 0 for none).
static __always_inline int tunnel_marked(__u32 mark, __u32 tunnel)
{
	return tunnel != 0 && (mark == tunnel || mark == (tunnel | SOURCE_MARK_BIT));
}

#ifndef AF_INET
#define AF_INET 2 // from the socket headers, which do not compile for BPF
#endif

static __always_inline void set_v4(__u32 ip6[4], __u32 ip4)
{
	ip6[0] = 0;
	ip6[1] = 0;
	ip6[2] = bpf_htonl(0xffff);
	ip6[3] = ip4;
}

// The socket's local and remote addresses, ports in host order, IPv4 as
// v4-mapped.
static __always_inline void sockops_addrs(struct bpf_sock_ops *skops, struct addr *local,
					  struct addr *remote)
{
	__u32 family = CTX_READ(skops->family);
	__u32 l4 = CTX_READ(skops->local_ip4);
	__u32 r4 = CTX_READ(skops->remote_ip4);
	__u32 l6[4], r6[4];
	l6[0] = CTX_READ(skops->local_ip6[0]);
	l6[1] = CTX_READ(skops->local_ip6[1]);
	l6[2] = CTX_READ(skops->local_ip6[2]);
	l6[3] = CTX_READ(skops->local_ip6[3]);
	r6[0] = CTX_READ(skops->remote_ip6[0]);
	r6[1] = CTX_READ(skops->remote_ip6[1]);
	r6[2] = CTX_READ(skops->remote_ip6[2]);
	r6[3] = CTX_READ(skops->remote_ip6[3]);
	if (family == AF_INET) {
		set_v4(local->ip6, l4);
		set_v4(remote->ip6, r4);
	} else {
		__builtin_memcpy(local->ip6, l6, sizeof(l6));
		__builtin_memcpy(remote->ip6, r6, sizeof(r6));
	}
	local->port = (__u16)CTX_READ(skops->local_port);
	remote->port = (__u16)bpf_ntohl(CTX_READ(skops->remote_port));
}

#endif
