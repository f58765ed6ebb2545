package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/warrenctl"
)

func newCheck(g *globals) *cobra.Command {
	var pre bool
	var output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that Warren can be installed (--pre) or is healthy",
		Long: `Runs a list of checks, each with a hint when it fails, and exits non-zero
if any fails (warnings do not). --pre, before install: the API server, your
permission to create what install creates, and the nodes' OS and kernel.
Without it: the CRDs, the controller, the node DaemonSet, the mesh roots, and
each node's ztunnel (ready, configuration acked, certificates valid), read
through port-forwards.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if output != "text" && output != "json" && output != "yaml" {
				return fmt.Errorf("output %q: want text, json or yaml", output)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var results []warrenctl.Result
			if pre {
				results = warrenctl.PreChecks(ctx, c)
			} else {
				results = warrenctl.PostChecks(ctx, c, time.Now())
			}
			failed := false
			for _, r := range results {
				failed = failed || r.Status == warrenctl.Fail
			}
			if output == "text" {
				warrenctl.WriteResults(cmd.OutOrStdout(), results)
			} else if err := warrenctl.Print(cmd.OutOrStdout(), output, results); err != nil {
				return err
			}
			if failed {
				return silentError{fmt.Errorf("checks failed")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&pre, "pre", false, "check the cluster before installing")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text, json or yaml")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

func newStatus(g *globals) *cobra.Command {
	var output string
	var noProbe bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Per node: versions, enrolled pods, config, certificates; per namespace: enrollment",
		Long: `Shows, per node, the agent's and ztunnel's image tags, how many running pods
are enrolled there (and how many the ztunnel serves), the configuration
updates its ztunnel acked and refused (the ztunnel exposes no config version),
and its earliest certificate expiry; and per namespace whether it is enrolled
(label warren.dev/mesh=enabled) and its warren.dev/use-waypoint label.
The ztunnels are read through port-forwards; --api-only skips them.`,
		Args:    cobra.NoArgs,
		PreRunE: validOutput(&output),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			s, err := warrenctl.ReadStatus(cmd.Context(), c, !noProbe)
			if err != nil {
				return err
			}
			if output != "table" {
				return warrenctl.Print(cmd.OutOrStdout(), output, s)
			}
			return warrenctl.WriteStatus(cmd.OutOrStdout(), s)
		},
	}
	outputFlag(cmd, &output)
	cmd.Flags().BoolVar(&noProbe, "api-only", false, "do not read the ztunnels (no port-forwards)")
	return cmd
}

func newVersion(g *globals) *cobra.Command {
	var output string
	var clientOnly bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "This binary's version and, if a cluster is reachable, Warren's there",
		Args:    cobra.NoArgs,
		PreRunE: validOutput(&output),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var c *warrenctl.Clients
			if !clientOnly {
				// No cluster is not an error here: the client's version still prints.
				c, _ = g.clients()
			}
			v := warrenctl.ClusterVersions(cmd.Context(), c)
			if clientOnly {
				v.Unreachable = ""
				return warrenctl.Print(cmd.OutOrStdout(), output, warrenctl.Versions{Client: v.Client})
			}
			return warrenctl.Print(cmd.OutOrStdout(), output, v)
		},
	}
	outputFlag(cmd, &output)
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only this binary's version")
	return cmd
}
