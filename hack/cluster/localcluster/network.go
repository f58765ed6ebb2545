package localcluster

import (
	"context"
	"fmt"
	"os"
	"strings"
)

func netnsPath(name string) string { return "/run/netns/" + name }

func netnsExists(name string) bool {
	_, err := os.Stat(netnsPath(name))
	return err == nil
}

// setupNetwork creates the control-plane netns with its bridge, one netns per node joined to it
// by a veth, and the routes between pod CIDRs. Nothing gets a route off the machine: the
// nodes' default route points at the control-plane bridge, which has none.
func (c *Config) setupNetwork(ctx context.Context) error {
	cmds := [][]string{}
	if !netnsExists(cpNetns) {
		if err := run(ctx, "ip", "netns", "add", cpNetns); err != nil {
			return err
		}
	}
	cp := func(args ...string) []string {
		return append([]string{"nsenter", "--net=" + netnsPath(cpNetns), "--"}, args...)
	}
	cmds = append(cmds,
		cp("ip", "link", "set", "lo", "up"),
		cp("ip", "link", "add", cpBridge, "type", "bridge"),
		cp("ip", "addr", "add", cpIP+"/24", "dev", cpBridge),
		cp("ip", "link", "set", cpBridge, "up"),
		cp("sysctl", "-qw", "net.ipv4.ip_forward=1"),
	)
	for _, n := range c.nodes() {
		if !netnsExists(n.Netns()) {
			if err := run(ctx, "ip", "netns", "add", n.Netns()); err != nil {
				return err
			}
		}
		nn := func(args ...string) []string {
			return append([]string{"nsenter", "--net=" + netnsPath(n.Netns()), "--"}, args...)
		}
		cmds = append(cmds,
			cp("ip", "link", "add", n.CPVeth(), "type", "veth", "peer", "name", "eth0", "netns", netnsPath(n.Netns())),
			cp("ip", "link", "set", n.CPVeth(), "master", cpBridge, "up"),
			cp("ip", "route", "add", n.PodCIDR(), "via", n.IP()),
			nn("ip", "link", "set", "lo", "up"),
			nn("ip", "addr", "add", n.IP()+"/24", "dev", "eth0"),
			nn("ip", "link", "set", "eth0", "up"),
			nn("ip", "route", "add", "default", "via", cpIP),
			nn("sysctl", "-qw", "net.ipv4.ip_forward=1"),
			nn("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"),
		)
		for _, o := range c.nodes() {
			if o.Index != n.Index {
				cmds = append(cmds, nn("ip", "route", "add", o.PodCIDR(), "via", o.IP()))
			}
		}
	}
	for _, args := range cmds {
		if err := run(ctx, args[0], args[1:]...); err != nil && !strings.Contains(err.Error(), "File exists") {
			return err
		}
	}
	return nil
}

// teardownNetwork deletes the namespaces; their veths and bridges go with them.
func (c *Config) teardownNetwork(ctx context.Context) error {
	var errs []string
	names := []string{cpNetns}
	for i := 1; i <= maxNodes; i++ {
		names = append(names, node{Index: i}.Netns())
	}
	for _, ns := range names {
		if netnsExists(ns) {
			if err := run(ctx, "ip", "netns", "delete", ns); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
