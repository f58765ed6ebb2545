// Command warrenctl is Warren's command line for operators. Verbs:
//
//	warrenctl observe [flags]   stream live flows from every node agent, like hubble observe
//
// It needs only a kubeconfig: it reaches each agent (DaemonSet warren-node
// in warren-system) through a port-forward to the agent's pod.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/warrenmesh/warren/internal/flagenv"
	"github.com/warrenmesh/warren/internal/observe"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "warrenctl:", err)
		os.Exit(1)
	}
}

const usage = `usage: warrenctl observe [flags]

Streams the TCP connections enrolled pods open, as the kernel saw them, from
every node agent, until interrupted. Run "warrenctl observe --help" for its flags.`

func run(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(out, usage)
		return nil
	}
	switch args[0] {
	case "observe":
		return runObserve(args[1:], out)
	}
	return fmt.Errorf("unknown verb %q\n%s", args[0], usage)
}

func runObserve(args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("warrenctl observe", pflag.ContinueOnError)
	fs.String("kubeconfig", "", "kubeconfig path; $KUBECONFIG or ~/.kube/config if empty")
	fs.String("context", "", "kubeconfig context; the current one if empty")
	fs.StringP("namespace", "n", "", "only flows with an end in this namespace")
	fs.String("pod", "", "only flows with an end at this pod (namespace/pod or pod)")
	fs.String("from", "", "only flows from this source (namespace/pod, namespace/, pod or IP)")
	fs.String("to", "", "only flows to this destination (namespace/pod, namespace/service, namespace/, pod or IP)")
	fs.StringSlice("verdict", nil, "only these verdicts: established, closed, reset, failed (repeat or comma-separate)")
	fs.StringP("output", "o", "table", "table or json (one object per line)")
	fs.String("agent-namespace", observe.DefaultAgentNamespace, "namespace of the node agents")
	fs.String("agent-selector", observe.DefaultAgentSelector, "label selector of the node agents' pods")
	fs.Int("agent-port", observe.DefaultAgentPort, "the agents' flow stream port")
	v, log, err := flagenv.Parse(fs, args, "WARRENCTL")
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
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
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = v.GetString("kubeconfig")
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: v.GetString("context")}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubernetes config: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return observe.Run(ctx, cfg, observe.Options{
		AgentNamespace: v.GetString("agent-namespace"),
		AgentSelector:  v.GetString("agent-selector"),
		AgentPort:      v.GetInt("agent-port"),
		Filter:         filter,
		Output:         v.GetString("output"),
		Log:            log,
	}, out)
}
