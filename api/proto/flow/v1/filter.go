package flowv1

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Validate checks the endpoint forms of a filter.
func (f *Filter) Validate() error {
	for _, s := range []string{f.GetPod(), f.GetFrom(), f.GetTo()} {
		if strings.Count(s, "/") > 1 {
			return fmt.Errorf("filter: %q: want namespace/pod, namespace/service, namespace/, pod or an IP", s)
		}
	}
	if strings.Contains(f.GetNamespace(), "/") {
		return fmt.Errorf("filter: namespace %q has a /", f.GetNamespace())
	}
	for _, v := range f.GetVerdicts() {
		if _, ok := Verdict_name[int32(v)]; !ok || v == Verdict_VERDICT_UNSPECIFIED {
			return fmt.Errorf("filter: verdict %v", v)
		}
	}
	return nil
}

// Match says whether the event passes the filter; a nil filter passes all.
func (f *Filter) Match(e *FlowEvent) bool {
	if f == nil {
		return true
	}
	src, dst := e.GetSource(), e.GetDestination()
	if ns := f.GetNamespace(); ns != "" && src.GetNamespace() != ns && dst.GetNamespace() != ns {
		return false
	}
	if p := f.GetPod(); p != "" && !matchPod(p, src) && !matchPod(p, dst) {
		return false
	}
	if s := f.GetFrom(); s != "" && !matchEndpoint(s, src) {
		return false
	}
	if s := f.GetTo(); s != "" && !matchEndpoint(s, dst) {
		return false
	}
	if vs := f.GetVerdicts(); len(vs) > 0 && !slices.Contains(vs, e.GetVerdict()) {
		return false
	}
	return true
}

// matchPod: "namespace/pod" or "pod".
func matchPod(s string, ep *Endpoint) bool {
	if ep.GetPod() == "" {
		return false
	}
	if ns, name, ok := strings.Cut(s, "/"); ok {
		return ep.GetNamespace() == ns && (name == "" || ep.GetPod() == name)
	}
	return ep.GetPod() == s
}

// matchEndpoint: an IP address, a pod form, or a Service: "namespace/"
// matches a Service in the namespace, "namespace/service" that Service.
func matchEndpoint(s string, ep *Endpoint) bool {
	if ip, err := netip.ParseAddr(s); err == nil {
		got, err := netip.ParseAddr(ep.GetIp())
		return err == nil && got.Unmap() == ip.Unmap()
	}
	return matchPod(s, ep) || matchService(s, ep)
}

// matchService: "namespace/service" or "namespace/".
func matchService(s string, ep *Endpoint) bool {
	ns, name, ok := strings.Cut(s, "/")
	return ok && ep.GetService() != "" && ep.GetNamespace() == ns && (name == "" || ep.GetService() == name)
}

// ParseVerdict reads a verdict by name, in any case: established, closed, reset, failed.
func ParseVerdict(s string) (Verdict, error) {
	v, ok := Verdict_value[strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("verdict %q: want established, closed, reset or failed", s)
	}
	return Verdict(v), nil
}
