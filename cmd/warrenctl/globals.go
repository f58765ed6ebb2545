package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/warrenctl"
)

// globals are the root's persistent flags.
type globals struct {
	kubeconfig, context, logLevel string
}

// clients loads the kubeconfig and makes the clients.
func (g *globals) clients() (*warrenctl.Clients, error) {
	cfg, err := warrenctl.LoadConfig(g.kubeconfig, g.context)
	if err != nil {
		return nil, err
	}
	// One slow API server must not hang a command forever.
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	return warrenctl.NewClients(cfg)
}

// outputFlag adds -o table|json|yaml.
func outputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", "table", "table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(warrenctl.Outputs, cobra.ShellCompDirectiveNoFileComp))
}

// validOutput is a PreRunE that refuses a bad -o before anything runs.
func validOutput(p *string) func(*cobra.Command, []string) error {
	return func(*cobra.Command, []string) error { return warrenctl.CheckOutput(*p) }
}

// exactArgs is cobra.ExactArgs with a line saying what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %s (got %d arguments); see %s --help", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}
