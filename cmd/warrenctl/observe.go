package main

import (
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/warrenmesh/warren/internal/flagenv"
	"github.com/warrenmesh/warren/internal/observe"
	"github.com/warrenmesh/warren/internal/warrenctl"
)

func newObserve(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Stream live flows from every node agent, like hubble observe",
		Long: `Streams the TCP connections enrolled pods open, as the kernel saw them, from
every node agent, until interrupted. Every flag can also be set as an
environment variable WARRENCTL_FLAG_NAME.`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringP("namespace", "n", "", "only flows with an end in this namespace")
	fs.String("pod", "", "only flows with an end at this pod (namespace/pod or pod)")
	fs.String("from", "", "only flows from this source (namespace/pod, namespace/, pod or IP)")
	fs.String("to", "", "only flows to this destination (namespace/pod, namespace/service, namespace/, pod or IP)")
	fs.StringSlice("verdict", nil, "only these verdicts: established, closed, reset, failed (repeat or comma-separate)")
	fs.StringP("output", "o", "table", "table or json (one object per line)")
	fs.String("agent-namespace", observe.DefaultAgentNamespace, "namespace of the node agents")
	fs.String("agent-selector", observe.DefaultAgentSelector, "label selector of the node agents' pods")
	fs.Int("agent-port", observe.DefaultAgentPort, "the agents' flow stream port")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("verdict", cobra.FixedCompletions([]string{"established", "closed", "reset", "failed"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// Flags are parsed; flagenv binds them (and their WARRENCTL_
		// variables) through viper and makes the logger, as in every main.
		v, log, err := flagenv.Parse(cmd.Flags(), nil, "WARRENCTL")
		if err != nil {
			return err
		}
		klog.SetSlogLogger(log.With("component", "client-go"))
		filter, err := observe.FilterFromFlags(v.GetString("namespace"), v.GetString("pod"), v.GetString("from"), v.GetString("to"), v.GetStringSlice("verdict"))
		if err != nil {
			return err
		}
		if _, err := observe.Formatter(v.GetString("output")); err != nil {
			return err
		}
		cfg, err := warrenctl.LoadConfig(v.GetString("kubeconfig"), v.GetString("context"))
		if err != nil {
			return err
		}
		return observe.Run(cmd.Context(), cfg, observe.Options{
			AgentNamespace: v.GetString("agent-namespace"),
			AgentSelector:  v.GetString("agent-selector"),
			AgentPort:      v.GetInt("agent-port"),
			Filter:         filter,
			Output:         v.GetString("output"),
			Log:            log,
		}, cmd.OutOrStdout())
	}
	return cmd
}
