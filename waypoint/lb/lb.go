// Package lb picks the endpoint a request goes to: the power of two
// choices over the requests each endpoint has outstanding (two endpoints
// drawn at random, the less loaded one wins). It needs no coordination
// between waypoint replicas, adapts to slow endpoints as least-request
// does, and avoids least-request's herd onto one endpoint that just freed
// up. Retries prefer endpoints the request has not tried yet.
package lb

import (
	"net/netip"
	"sync"
)

// Choose is the decision: among n candidates, draw two distinct ones with
// rnd (uniform in [0, n)) and return the one with the lower load, the first
// drawn on a tie.
func Choose(n int, load func(i int) int64, rnd func(n int) int) int {
	switch n {
	case 0:
		return -1
	case 1:
		return 0
	}
	i := rnd(n)
	j := rnd(n - 1)
	if j >= i {
		j++
	}
	if load(j) < load(i) {
		return j
	}
	return i
}

// Balancer counts the requests outstanding per endpoint address. The zero
// value is ready to use.
type Balancer struct {
	mu   sync.Mutex
	load map[netip.AddrPort]int64
}

// Load returns the requests outstanding to addr.
func (b *Balancer) Load(addr netip.AddrPort) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.load[addr]
}

// Pick chooses among candidates, preferring those tried is false for
// (none: all of them), counts a request outstanding to the one chosen and
// returns it with the function that ends that request. ok is false when
// there are no candidates.
func (b *Balancer) Pick(candidates []netip.AddrPort, tried func(netip.AddrPort) bool, rnd func(n int) int) (addr netip.AddrPort, done func(), ok bool) {
	if len(candidates) == 0 {
		return netip.AddrPort{}, nil, false
	}
	if tried != nil {
		fresh := make([]netip.AddrPort, 0, len(candidates))
		for _, c := range candidates {
			if !tried(c) {
				fresh = append(fresh, c)
			}
		}
		if len(fresh) > 0 {
			candidates = fresh
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.load == nil {
		b.load = map[netip.AddrPort]int64{}
	}
	i := Choose(len(candidates), func(i int) int64 { return b.load[candidates[i]] }, rnd)
	addr = candidates[i]
	b.load[addr]++
	var once sync.Once
	return addr, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.load[addr]--; b.load[addr] <= 0 {
				delete(b.load, addr)
			}
		})
	}, true
}
