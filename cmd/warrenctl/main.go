// Command warrenctl is Warren's command line for operators:
//
//	warrenctl check [--pre]          is the cluster ready for Warren / is Warren healthy
//	warrenctl install | uninstall    apply or remove the manifests built into the binary
//	warrenctl status                 nodes (versions, enrolled pods, certificates), namespaces
//	warrenctl config KIND [--node]   what one ztunnel holds: workloads, services, policies, certs
//	warrenctl enroll | unenroll NS   set or remove a namespace's warren.dev/mesh label
//	warrenctl observe [flags]        stream live flows from every node agent, like hubble observe
//	warrenctl version                this binary's version and the cluster's
//	warrenctl completion SHELL       shell completion (bash, zsh, fish, powershell)
//
// It needs only a kubeconfig (--kubeconfig, --context, as kubectl): it reaches
// the node agents and ztunnels (DaemonSet warren-node in warren-system)
// through port-forwards to their pods.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line and returns the exit code: 0, or 1 after one
// line on stderr saying what failed (or 1 after a failed check's report).
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := newRoot(out, errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var quiet silentError
	if !errors.As(err, &quiet) {
		fmt.Fprintln(errOut, "warrenctl:", err)
	}
	return 1
}

// silentError fails the command after it printed its own report.
type silentError struct{ error }

func newRoot(out, errOut io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "warrenctl",
		Short: "Operate Warren, the sidecarless service mesh",
		Long: `warrenctl installs, checks and inspects Warren in the cluster of your kubeconfig.

It reaches the node agents and ztunnels through port-forwards to the
warren-node pods, so a kubeconfig that may create pods/portforward in
warren-system is all it needs.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig path; $KUBECONFIG or ~/.kube/config if empty")
	pf.StringVar(&g.context, "context", "", "kubeconfig context; the current one if empty")
	pf.StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error (client logs, on stderr)")
	root.AddCommand(
		newObserve(g),
		newEnroll(g, true), newEnroll(g, false),
		newConfig(g),
		newCheck(g),
		newStatus(g),
		newVersion(g),
		newInstall(g), newUninstall(g),
	)
	return root
}
