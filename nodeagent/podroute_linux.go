package nodeagent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/podroute"
)

// The sysctls, read in the current thread's netns: fwmarkAccept gives an
// accepted socket the mark of the SYN it answered (IPv4 and IPv6 both); the
// fwmark_reflect ones give the kernel's own replies (a RST from a closed
// port) the mark of the packet they answer, so that a refusal reaches the
// tunnel at once.
//
// They are paths below a proc/sys directory: a process's /proc/sys/net shows
// the network namespace of the thread that opens it, so written from a
// thread inside the pod's netns they are the pod's. A container's own
// /proc/sys is read-only; the agent's DaemonSet mounts the host's at
// /host/proc/sys (Options.ProcSys).
const (
	fwmarkAccept   = "net/ipv4/tcp_fwmark_accept"
	fwmarkReflect4 = "net/ipv4/fwmark_reflect"
	fwmarkReflect6 = "net/ipv6/fwmark_reflect"
)

func sysctls(procSys string, ipv6 bool) []string {
	names := []string{fwmarkAccept, fwmarkReflect4}
	if ipv6 {
		names = append(names, fwmarkReflect6)
	}
	for i, n := range names {
		names[i] = filepath.Join(procSys, n)
	}
	return names
}

// setupSourceRouting writes the pod's policy routing for the tunnel's
// connections from a client's address (see internal/podroute): the sysctl,
// the table's routes, then the rules, which tell the tunnel it is all there.
// Idempotent.
func setupSourceRouting(ns *os.File, procSys string, tunnelMark uint32, ipv6 bool) error {
	return netns.Do(ns, func() error {
		for _, f := range sysctls(procSys, ipv6) {
			if err := os.WriteFile(f, []byte("1"), 0); err != nil {
				if errors.Is(err, unix.EROFS) {
					return fmt.Errorf("sysctl %s: %w (mount the host's /proc/sys and pass its path in --proc-sys)", f, err)
				}
				return fmt.Errorf("sysctl %s: %w", f, err)
			}
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("link lo: %w", err)
		}
		families := sourceFamilies(ipv6)
		for _, fam := range families {
			if err := netlink.RouteReplace(sourceRoute(fam, lo.Attrs().Index)); err != nil {
				return fmt.Errorf("route local default dev lo table %#x (family %d): %w", podroute.Table, fam, err)
			}
		}
		for _, fam := range families {
			if err := netlink.RuleAdd(sourceRule(fam, tunnelMark)); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("rule fwmark %#x lookup %#x (family %d): %w", podroute.SourceMark(tunnelMark), podroute.Table, fam, err)
			}
		}
		return nil
	})
}

// teardownSourceRouting removes what setupSourceRouting wrote, rules first.
// What is already gone is not an error. The sysctls go back to 0, their
// default, when a rule was there (the pod had the routing).
func teardownSourceRouting(ns *os.File, procSys string, tunnelMark uint32) error {
	return netns.Do(ns, func() error {
		var errs []error
		had := false
		for _, fam := range sourceFamilies(true) {
			err := netlink.RuleDel(sourceRule(fam, tunnelMark))
			switch {
			case err == nil:
				had = true
			case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAFNOSUPPORT):
			default:
				errs = append(errs, fmt.Errorf("rule (family %d): %w", fam, err))
			}
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			for _, fam := range sourceFamilies(true) {
				err := netlink.RouteDel(sourceRoute(fam, lo.Attrs().Index))
				if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EAFNOSUPPORT) {
					errs = append(errs, fmt.Errorf("route (family %d): %w", fam, err))
				}
			}
		}
		if had {
			for _, f := range sysctls(procSys, true) {
				if err := os.WriteFile(f, []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("sysctl %s: %w", f, err))
				}
			}
		}
		return errors.Join(errs...)
	})
}

func sourceFamilies(ipv6 bool) []int {
	if ipv6 {
		return []int{unix.AF_INET, unix.AF_INET6}
	}
	return []int{unix.AF_INET}
}

func sourceRoute(family, lo int) *netlink.Route {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if family == unix.AF_INET6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &netlink.Route{LinkIndex: lo, Dst: dst, Table: podroute.Table, Type: unix.RTN_LOCAL,
		Scope: netlink.SCOPE_HOST, Family: family}
}

func sourceRule(family int, tunnelMark uint32) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = family
	r.Mark = podroute.SourceMark(tunnelMark)
	mask := ^uint32(0)
	r.Mask = &mask
	r.Table = podroute.Table
	r.Priority = podroute.Priority
	return r
}
