package nodeagent

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestPodValidate(t *testing.T) {
	v4 := netip.MustParseAddr("10.244.1.5")
	v6 := netip.MustParseAddr("fd00::5")
	for _, tc := range []struct {
		name string
		pod  Pod
		ok   bool
	}{
		{"v4", Pod{UID: "0b7c5e0e-1a2b-4c3d-8e9f-001122334455", Netns: "/proc/1/ns/net", IPs: []netip.Addr{v4}}, true},
		{"dual", Pod{UID: "a", Netns: "/x", IPs: []netip.Addr{v4, v6}}, true},
		{"no uid", Pod{Netns: "/x", IPs: []netip.Addr{v4}}, false},
		{"uid with slash", Pod{UID: "a/b", Netns: "/x", IPs: []netip.Addr{v4}}, false},
		{"uid too long", Pod{UID: strings.Repeat("a", 64), Netns: "/x", IPs: []netip.Addr{v4}}, false},
		{"no netns", Pod{UID: "a", IPs: []netip.Addr{v4}}, false},
		{"no ip", Pod{UID: "a", Netns: "/x"}, false},
		{"two v4", Pod{UID: "a", Netns: "/x", IPs: []netip.Addr{v4, v4}}, false},
		{"loopback", Pod{UID: "a", Netns: "/x", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, false},
		{"mapped loopback", Pod{UID: "a", Netns: "/x", IPs: []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}}, false},
		{"invalid", Pod{UID: "a", Netns: "/x", IPs: []netip.Addr{{}}}, false},
	} {
		err := tc.pod.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidPod) {
			t.Errorf("%s: %v is not ErrInvalidPod", tc.name, err)
		}
	}
}
