package localcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// requirement is a file or command the cluster needs, and the Debian package that has it.
type requirement struct{ path, pkg string }

var requirements = []requirement{
	{"/usr/bin/etcd", "etcd-server"},
	{"/usr/sbin/runc", "runc"},
	{cniPluginsDir + "/bridge", "containernetworking-plugins"},
	{"iptables", "iptables"},
	{"nft", "nftables"},
	{"conntrack", "conntrack"},
	{"socat", "socat"},
	{"ip", "iproute2"},
	{"nsenter", "util-linux"},
	{"unshare", "util-linux"},
}

func missingPackages() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range requirements {
		var err error
		if strings.HasPrefix(r.path, "/") {
			_, err = os.Stat(r.path)
		} else {
			_, err = exec.LookPath(r.path)
			if err != nil {
				for _, d := range []string{"/usr/sbin", "/sbin"} {
					if _, e := os.Stat(d + "/" + r.path); e == nil {
						err = nil
					}
				}
			}
		}
		if err != nil && !seen[r.pkg] {
			seen[r.pkg] = true
			out = append(out, r.pkg)
		}
	}
	return out
}

// ensureDeps installs the missing Debian packages with apt-get.
func ensureDeps(ctx context.Context, log io.Writer) error {
	missing := missingPackages()
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(log, "==> installing Debian packages: %s\n", strings.Join(missing, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"apt-get", "update", "-qq"},
		append([]string{"apt-get", "install", "-y", "-qq", "--no-install-recommends"}, missing...),
	} {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	if m := missingPackages(); len(m) > 0 {
		return fmt.Errorf("still missing after install: %s", strings.Join(m, " "))
	}
	return nil
}
