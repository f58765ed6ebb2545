package model

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/internal/policy"
)

func applies(ns string, sel map[string]string, w *Workload, systemNamespace string) bool {
	return policy.Applies(ns, sel, target(w), systemNamespace)
}

func target(w *Workload) policy.Target {
	return policy.Target{Namespace: w.Namespace, Labels: w.Labels}
}

// Authorize decides c to dst under policies: any matching DENY policy
// refuses it (deny wins, whatever else matches); otherwise, if ALLOW policies
// apply to dst, one of them must match; with no policy, it is allowed. It is
// internal/policy.Authorize, which the ztunnel uses too, on the same values.
func Authorize(policies []policy.Policy, systemNamespace string, dst *Workload, c policy.Conn) policy.Decision {
	return policy.Authorize(policies, systemNamespace, target(dst), c)
}

// MTLSMode returns the mode in force for w and the PeerAuthentication that
// sets it (empty: the default, PERMISSIVE). The most specific object wins:
// with a selector, then the namespace's, then the mesh-wide one; within a
// level the oldest, then the first by name.
func (m *Model) MTLSMode(w *Workload) (v1alpha1.MTLSMode, string) {
	var best *PeerAuth
	bestLevel := 0
	for i := range m.PeerAuths {
		pa := &m.PeerAuths[i]
		level := paLevel(pa, w, m.SystemNamespace)
		if level == 0 {
			continue
		}
		if best == nil || level > bestLevel || level == bestLevel && paOlder(pa, best) {
			best, bestLevel = pa, level
		}
	}
	if best == nil {
		return v1alpha1.ModePermissive, ""
	}
	return best.Mode, best.Namespace + "/" + best.Name
}

// paLevel ranks how specifically pa applies to w: 3 by selector, 2 to its
// namespace, 1 mesh-wide, 0 not at all.
func paLevel(pa *PeerAuth, w *Workload, systemNamespace string) int {
	switch {
	case pa.Selector != nil && applies(pa.Namespace, pa.Selector, w, systemNamespace):
		return 3
	case pa.Selector != nil:
		return 0
	case pa.Namespace == w.Namespace:
		return 2
	case pa.Namespace == systemNamespace:
		return 1
	}
	return 0
}

func paOlder(a, b *PeerAuth) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// judgePolicies fills the verdicts of valid AuthorizationPolicies: ALLOW
// policies that share a workload with a DENY policy are in force but told
// that deny wins where both match. One pass over the workloads, so the cost
// is workloads × policies, not policies².
func (m *Model) judgePolicies() {
	overlaps := map[int]map[string]bool{} // ALLOW policy index -> DENY policy names
	byNS := map[string][]int{}
	for i := range m.Policies {
		byNS[m.Policies[i].Namespace] = append(byNS[m.Policies[i].Namespace], i)
	}
	for _, w := range m.sortedWorkloads() {
		var allows, denies []int
		candidates := byNS[w.Namespace]
		if w.Namespace != m.SystemNamespace {
			candidates = append(slices.Clip(candidates), byNS[m.SystemNamespace]...)
		}
		for _, i := range candidates {
			p := &m.Policies[i]
			if !p.AppliesTo(target(w), m.SystemNamespace) {
				continue
			}
			if p.Action == policy.ActionDeny {
				denies = append(denies, i)
			} else {
				allows = append(allows, i)
			}
		}
		for _, a := range allows {
			for _, d := range denies {
				if overlaps[a] == nil {
					overlaps[a] = map[string]bool{}
				}
				overlaps[a][m.Policies[d].Namespace+"/"+m.Policies[d].Name] = true
			}
		}
	}
	for i := range m.Policies {
		p := &m.Policies[i]
		k := Key{Namespace: p.Namespace, Name: p.Name}
		if _, judged := m.AuthzVerdicts[k]; judged {
			continue // invalid, already said why
		}
		v := Verdict{Accepted: true, Reason: v1alpha1.ReasonAccepted, Message: "in force"}
		if denies := overlaps[i]; len(denies) > 0 {
			v.Reason = v1alpha1.ReasonOverlapsDeny
			v.Message = fmt.Sprintf("in force, but DENY policies %s apply to some of the same workloads, and deny wins where both match", list(slices.Collect(maps.Keys(denies))))
		}
		m.AuthzVerdicts[k] = v
	}
}

// judgePeerAuths marks PeerAuthentications that lose to an older object of
// the same scope: two without a selector in one namespace, or two with
// selectors that pick a common workload.
func (m *Model) judgePeerAuths() {
	conflicted := map[int]int{} // loser index -> winner index
	lose := func(loser, winner int) {
		if w, ok := conflicted[loser]; !ok || paOlder(&m.PeerAuths[winner], &m.PeerAuths[w]) {
			conflicted[loser] = winner
		}
	}
	// Namespace-wide objects: the oldest of each namespace wins.
	oldest := map[string]int{}
	for i := range m.PeerAuths {
		pa := &m.PeerAuths[i]
		if pa.Selector != nil {
			continue
		}
		if o, ok := oldest[pa.Namespace]; !ok || paOlder(pa, &m.PeerAuths[o]) {
			oldest[pa.Namespace] = i
		}
	}
	for i := range m.PeerAuths {
		if o, ok := oldest[m.PeerAuths[i].Namespace]; ok && m.PeerAuths[i].Selector == nil && o != i {
			lose(i, o)
		}
	}
	// Selector objects: per workload, the oldest that selects it wins.
	selByNS := map[string][]int{}
	for i := range m.PeerAuths {
		if m.PeerAuths[i].Selector != nil {
			selByNS[m.PeerAuths[i].Namespace] = append(selByNS[m.PeerAuths[i].Namespace], i)
		}
	}
	for _, w := range m.sortedWorkloads() {
		best := -1
		var all []int
		for _, i := range selByNS[w.Namespace] {
			pa := &m.PeerAuths[i]
			if pa.Selector == nil || !applies(pa.Namespace, pa.Selector, w, m.SystemNamespace) {
				continue
			}
			all = append(all, i)
			if best < 0 || paOlder(pa, &m.PeerAuths[best]) {
				best = i
			}
		}
		for _, i := range all {
			if i != best {
				lose(i, best)
			}
		}
	}
	for i := range m.PeerAuths {
		pa := &m.PeerAuths[i]
		k := Key{Namespace: pa.Namespace, Name: pa.Name}
		if _, judged := m.PeerAuthVerdicts[k]; judged {
			continue
		}
		if w, ok := conflicted[i]; ok {
			winner := &m.PeerAuths[w]
			m.PeerAuthVerdicts[k] = Verdict{Reason: v1alpha1.ReasonConflicted,
				Message: fmt.Sprintf("%s/%s, older, has the same scope and is in force instead", winner.Namespace, winner.Name)}
			continue
		}
		m.PeerAuthVerdicts[k] = Verdict{Accepted: true, Reason: v1alpha1.ReasonAccepted, Message: "in force"}
	}
}

// sortedWorkloads returns the workloads by UID; Build computes it once, a
// Model assembled by hand sorts on each call.
func (m *Model) sortedWorkloads() []*Workload {
	if m.ordered != nil {
		return m.ordered
	}
	// Sorting the keys beside the pointers reads no workload: 10k of them
	// sort in a third of the time.
	type keyed struct {
		uid string
		w   *Workload
	}
	ks := make([]keyed, 0, len(m.Workloads))
	for uid, w := range m.Workloads {
		ks = append(ks, keyed{string(uid), w})
	}
	slices.SortFunc(ks, func(a, b keyed) int { return strings.Compare(a.uid, b.uid) })
	ws := make([]*Workload, len(ks))
	for i, k := range ks {
		ws[i] = k.w
	}
	return ws
}

func list(names []string) string {
	slices.Sort(names)
	if len(names) > 3 {
		return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
	}
	return strings.Join(names, ", ")
}
