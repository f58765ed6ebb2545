package lb

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		loads []int64
		draws [2]int // values rnd returns in turn
		want  int
	}{
		{[]int64{5, 1, 3}, [2]int{0, 0}, 1}, // 0 and 1 (the second draw skips the first): 1 is less loaded
		{[]int64{5, 1, 3}, [2]int{1, 1}, 1}, // 1 and 2
		{[]int64{5, 1, 3}, [2]int{2, 0}, 2}, // 2 and 0
		{[]int64{5, 1, 3}, [2]int{2, 1}, 1}, // 2 and 1
		{[]int64{4, 4}, [2]int{1, 0}, 1},    // a tie: the first drawn
	} {
		k := 0
		rnd := func(n int) int { v := tc.draws[k]; k++; return v }
		if got := Choose(len(tc.loads), func(i int) int64 { return tc.loads[i] }, rnd); got != tc.want {
			t.Errorf("loads %v draws %v: %d, want %d", tc.loads, tc.draws, got, tc.want)
		}
	}
	if Choose(0, nil, nil) != -1 || Choose(1, nil, nil) != 0 {
		t.Error("Choose with 0 or 1 candidates")
	}
}

// TestBalancerAvoidsLoaded holds many requests open on one endpoint: new
// ones go elsewhere, and never twice in a row to the same one when others
// are idle.
func TestBalancerAvoidsLoaded(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rnd := func(n int) int { return rng.IntN(n) }
	var b Balancer
	a, c := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80")
	cands := []netip.AddrPort{a, c}
	var dones []func()
	for range 10 {
		_, done, _ := b.Pick([]netip.AddrPort{a}, nil, rnd)
		dones = append(dones, done)
	}
	for range 100 {
		got, done, ok := b.Pick(cands, nil, rnd)
		if !ok || got != c {
			t.Fatalf("picked %v with a at load %d, c at %d", got, b.Load(a), b.Load(c))
		}
		done()
		done() // idempotent
	}
	for _, d := range dones {
		d()
	}
	if b.Load(a) != 0 || len(b.load) != 0 {
		t.Errorf("load after done: %d, map %v", b.Load(a), b.load)
	}
	// Equal loads and four endpoints: spread within bounds.
	four := []netip.AddrPort{a, c, netip.MustParseAddrPort("10.0.0.3:80"), netip.MustParseAddrPort("10.0.0.4:80")}
	count := map[netip.AddrPort]int{}
	for range 4000 {
		got, done, _ := b.Pick(four, nil, rnd)
		count[got]++
		done()
	}
	for _, e := range four {
		// Binomial(4000, 1/4): sigma 27; 5 sigma.
		if n := count[e]; n < 1000-137 || n > 1000+137 {
			t.Errorf("%v picked %d of 4000", e, n)
		}
	}
	// Outstanding requests spread evenly: the maximum stays near the mean.
	dones = nil
	for range 400 {
		_, done, _ := b.Pick(four, nil, rnd)
		dones = append(dones, done)
	}
	for _, e := range four {
		if l := b.Load(e); l < 90 || l > 110 {
			t.Errorf("%v holds %d of 400 outstanding", e, l)
		}
	}
	for _, d := range dones {
		d()
	}
}

func TestPickPrefersUntried(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	rnd := func(n int) int { return rng.IntN(n) }
	var b Balancer
	a, c := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80")
	for range 50 {
		got, done, _ := b.Pick([]netip.AddrPort{a, c}, func(x netip.AddrPort) bool { return x == a }, rnd)
		done()
		if got != c {
			t.Fatalf("picked the tried %v", got)
		}
	}
	// All tried: any of them.
	if _, done, ok := b.Pick([]netip.AddrPort{a}, func(netip.AddrPort) bool { return true }, rnd); !ok {
		t.Fatal("no pick when every candidate was tried")
	} else {
		done()
	}
	if _, _, ok := b.Pick(nil, nil, rnd); ok {
		t.Error("picked from no candidates")
	}
}
