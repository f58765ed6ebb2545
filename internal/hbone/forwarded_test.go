package hbone

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	for _, a := range []string{"10.0.0.1", "fd00::1"} {
		addr := netip.MustParseAddr(a)
		got, err := ParseForwardedFor([]string{ForwardedFor(addr)})
		if err != nil || got != addr {
			t.Errorf("round trip of %s: %v, %v", a, got, err)
		}
	}
	for _, tc := range []struct {
		in   []string
		want string // "" invalid address, "error" an error
	}{
		{nil, ""},
		{[]string{"proto=https"}, ""},
		{[]string{`For="[fd00::2]:4711";proto=http, for=10.9.9.9`}, "fd00::2"},
		{[]string{"for=10.0.0.2:80"}, "10.0.0.2"},
		{[]string{"for=unknown"}, "error"},
		{[]string{"for=_hidden"}, "error"},
	} {
		got, err := ParseForwardedFor(tc.in)
		switch {
		case tc.want == "error":
			if err == nil {
				t.Errorf("%q: %v, want an error", tc.in, got)
			}
		case tc.want == "":
			if err != nil || got.IsValid() {
				t.Errorf("%q: %v, %v, want none", tc.in, got, err)
			}
		case err != nil || got != netip.MustParseAddr(tc.want):
			t.Errorf("%q: %v, %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestCaller(t *testing.T) {
	h := http.Header{}
	if _, _, err := Caller(h); err == nil {
		t.Error("no caller: want an error")
	}
	h.Set(HeaderCaller, "spiffe://cluster.local/ns/demo/sa/client")
	h.Set(HeaderForwarded, "for=10.1.2.3")
	id, addr, err := Caller(h)
	if err != nil || id.ServiceAccount != "client" || addr != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("Caller: %v %v %v", id, addr, err)
	}
	h.Add(HeaderCaller, "spiffe://cluster.local/ns/demo/sa/other")
	if _, _, err := Caller(h); err == nil {
		t.Error("two callers: want an error")
	}
	h.Set(HeaderCaller, "not-a-spiffe-id")
	if _, _, err := Caller(h); err == nil {
		t.Error("bad caller: want an error")
	}
}
