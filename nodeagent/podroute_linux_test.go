package nodeagent

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/podroute"
)

// The routing that lets the tunnel deliver from a client's address: written
// at enroll (once, however often the pod is enrolled again), seen by the
// tunnel's check, removed at unenroll and at uninstall, never written when
// the option is off. The delivery itself is tested with the ztunnel
// (ztunnel.TestTwoNodes).
func TestSourceRouting(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	mark := k.opts.TunnelMark
	pod := func(n int, ips ...string) (Pod, *os.File) {
		name := fmt.Sprintf("wtest-%d-src%d", os.Getpid(), n)
		ns := addNetns(t, name)
		p := Pod{UID: fmt.Sprintf("src-%d", n), Netns: filepath.Join(netns.RunDir, name)}
		for _, ip := range ips {
			p.IPs = append(p.IPs, netip.MustParseAddr(ip))
		}
		return p, ns
	}
	expect := func(what string, ns *os.File, rules, routes, sysctls int) {
		t.Helper()
		r, rt, s, err := sourceRoutingState(ns, k.opts.ProcSys, mark)
		if err != nil {
			t.Fatal(err)
		}
		if r != rules || rt != routes || s != sysctls {
			t.Errorf("%s: %d rules, %d routes, %d sysctls on; want %d, %d, %d", what, r, rt, s, rules, routes, sysctls)
		}
		var ready4, ready6 bool
		if err := netns.Do(ns, func() (err error) {
			if ready4, err = podroute.Ready(unix.AF_INET, mark); err != nil {
				return err
			}
			ready6, err = podroute.Ready(unix.AF_INET6, mark)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if want4, want6 := rules > 0, rules > 1; ready4 != want4 || ready6 != want6 {
			t.Errorf("%s: the tunnel's check says IPv4 %v, IPv6 %v; want %v, %v", what, ready4, ready6, want4, want6)
		}
	}

	dual, dualNS := pod(1, "10.78.9.1", "fd78:9::1")
	expect("before enroll", dualNS, 0, 0, 0)
	enroll(t, k, dual)
	expect("dual-stack pod enrolled", dualNS, 2, 2, 3)
	enroll(t, k, dual)
	expect("enrolled again", dualNS, 2, 2, 3)
	if err := k.Unenroll(ctx, dual.UID); err != nil {
		t.Fatal(err)
	}
	expect("unenrolled", dualNS, 0, 0, 0)

	v4, v4NS := pod(2, "10.78.9.2")
	enroll(t, k, v4)
	expect("IPv4 pod enrolled", v4NS, 1, 1, 2)

	// Uninstall takes it away with the rest.
	enroll(t, k, dual)
	if err := k.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	expect("IPv4 pod after uninstall", v4NS, 0, 0, 0)
	expect("dual-stack pod after uninstall", dualNS, 0, 0, 0)

	off := opts
	off.NoSourceAddress = true
	k2 := e.open(off)
	enroll(t, k2, v4)
	expect("enrolled with the option off", v4NS, 0, 0, 0)
	if err := k2.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTunnelMarkSourceBitRefused(t *testing.T) {
	o := Options{Node: "n1", TunnelMark: 0x15741}
	o.setDefaults()
	if err := o.Validate(); err == nil {
		t.Fatal("a tunnel mark with the source-address bit was accepted")
	}
}

// sourceRoutingState reads what of the pod's source routing is there.
func sourceRoutingState(ns *os.File, procSys string, tunnelMark uint32) (rules, routes int, sysctlsOn int, err error) {
	err = netns.Do(ns, func() error {
		for _, fam := range sourceFamilies(true) {
			rs, err := netlink.RuleListFiltered(fam, &netlink.Rule{Table: podroute.Table}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Mark == podroute.SourceMark(tunnelMark) {
					rules++
				}
			}
			rts, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: podroute.Table}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return err
			}
			routes += len(rts)
		}
		for _, f := range sysctls(procSys, true) {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(b)) == "1" {
				sysctlsOn++
			}
		}
		return nil
	})
	return
}
