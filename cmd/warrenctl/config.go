package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/warrenctl"
)

func newConfig(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config workloads|services|policies|certs",
		Short: "Show what one node's ztunnel holds (from its admin port)",
		Long: `Shows one ztunnel's configuration as it holds it (its /config_dump and
/certs on the node's 127.0.0.1:15000, reached through a port-forward to the
warren-node pod): workloads (local pods first), services, authorization
policies, or its certificates. --node picks the node; it may be left out on
a one-node cluster.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q; want one of %s", args[0], cmd.CommandPath(), strings.Join(warrenctl.ConfigKinds, ", "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	for _, kind := range warrenctl.ConfigKinds {
		var node, output string
		sub := &cobra.Command{
			Use:     kind,
			Short:   "The " + kind + " the ztunnel holds",
			Args:    cobra.NoArgs,
			PreRunE: validOutput(&output),
			RunE: func(cmd *cobra.Command, _ []string) error {
				c, err := g.clients()
				if err != nil {
					return err
				}
				v, err := warrenctl.ZtunnelConfig(cmd.Context(), c, node, kind, time.Now())
				if err != nil {
					return err
				}
				return warrenctl.Print(cmd.OutOrStdout(), output, v)
			},
		}
		sub.Flags().StringVar(&node, "node", "", "the node whose ztunnel to read")
		outputFlag(sub, &output)
		cmd.AddCommand(sub)
	}
	return cmd
}
