// Package observe is warrenctl observe: it streams live flow events from
// every node agent (warren.flow.v1.Flows on each agent's 127.0.0.1:15025),
// reached through Kubernetes port-forwards to the agents' pods, so that a
// kubeconfig is all it needs; and it prints them as a table or JSON lines.
package observe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	flowv1 "github.com/warrenmesh/warren/api/proto/flow/v1"
	"github.com/warrenmesh/warren/internal/podforward"
)

// Defaults: where the node agents run and serve their flow stream.
const (
	DefaultAgentNamespace = "warren-system"
	DefaultAgentSelector  = "app.kubernetes.io/name=warren-node"
	DefaultAgentPort      = 15025
)

// Options of an observe run.
type Options struct {
	AgentNamespace string
	AgentSelector  string
	AgentPort      int
	Filter         *flowv1.Filter
	// Output is "table" (default) or "json" (one protojson object per line).
	Output string
	// Rescan is how often the agents are listed again (new nodes, restarted agents); 10 s if zero.
	Rescan time.Duration
	Log    *slog.Logger
}

// FilterFromFlags builds the filter of the command line's flags.
func FilterFromFlags(namespace, pod, from, to string, verdicts []string) (*flowv1.Filter, error) {
	f := &flowv1.Filter{Namespace: namespace, Pod: pod, From: from, To: to}
	for _, v := range verdicts {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			vd, err := flowv1.ParseVerdict(s)
			if err != nil {
				return nil, err
			}
			f.Verdicts = append(f.Verdicts, vd)
		}
	}
	return f, f.Validate()
}

// Run streams from every agent until ctx ends, writing each event to out.
func Run(ctx context.Context, cfg *rest.Config, opts Options, out io.Writer) error {
	if opts.AgentNamespace == "" {
		opts.AgentNamespace = DefaultAgentNamespace
	}
	if opts.AgentSelector == "" {
		opts.AgentSelector = DefaultAgentSelector
	}
	if opts.AgentPort == 0 {
		opts.AgentPort = DefaultAgentPort
	}
	if opts.Rescan == 0 {
		opts.Rescan = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if err := opts.Filter.Validate(); err != nil {
		return err
	}
	format, err := Formatter(opts.Output)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	events := make(chan *flowv1.FlowEvent, 1024)
	var (
		mu      sync.Mutex
		running = map[string]bool{} // agent pods streaming, by name
		wg      sync.WaitGroup
	)
	defer wg.Wait()
	scan := func() error {
		pods, err := client.CoreV1().Pods(opts.AgentNamespace).List(ctx, metav1.ListOptions{LabelSelector: opts.AgentSelector})
		if err != nil {
			return fmt.Errorf("listing agents (%s in %s): %w", opts.AgentSelector, opts.AgentNamespace, err)
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				continue
			}
			mu.Lock()
			if running[p.Name] {
				mu.Unlock()
				continue
			}
			running[p.Name] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := streamPod(ctx, cfg, p.Namespace, p.Name, opts.AgentPort, opts.Filter, events)
				if err != nil && ctx.Err() == nil {
					opts.Log.Warn("agent stream ended; retrying at the next scan", "pod", p.Name, "node", p.Spec.NodeName, "err", err)
				}
				mu.Lock()
				delete(running, p.Name)
				mu.Unlock()
			}()
		}
		return nil
	}
	if err := scan(); err != nil {
		return err
	}
	if t, ok := format.(header); ok {
		fmt.Fprintln(out, t.Header())
	}
	tick := time.NewTicker(opts.Rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := scan(); err != nil {
				opts.Log.Warn("agent scan failed", "err", err)
			}
		case e := <-events:
			if _, err := fmt.Fprintln(out, format.Format(e)); err != nil {
				return err
			}
		}
	}
}

// streamPod port-forwards to an agent pod's flow port and streams from it.
func streamPod(ctx context.Context, cfg *rest.Config, namespace, pod string, port int, f *flowv1.Filter, out chan<- *flowv1.FlowEvent) error {
	fwd, err := podforward.Open(ctx, cfg, namespace, pod, port)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer fwd.Close()
	return Stream(ctx, fwd.Addr, f, out)
}

// Stream reads one agent's flow stream at addr into out until ctx ends or the stream does.
func Stream(ctx context.Context, addr string, f *flowv1.Filter, out chan<- *flowv1.FlowEvent) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := flowv1.NewFlowsClient(conn).Observe(ctx, &flowv1.ObserveRequest{Filter: f})
	if err != nil {
		return err
	}
	for {
		e, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case out <- e:
		case <-ctx.Done():
			return nil
		}
	}
}

// A Format turns an event into one line.
type Format interface {
	Format(e *flowv1.FlowEvent) string
}

type header interface{ Header() string }

// Formatter returns the format named "table" (or "") or "json".
func Formatter(name string) (Format, error) {
	switch name {
	case "", "table":
		return Table{}, nil
	case "json":
		return JSON{}, nil
	}
	return nil, fmt.Errorf("output %q: want table or json", name)
}

// JSON prints each event as one protojson object.
type JSON struct{}

// Format implements Format.
func (JSON) Format(e *flowv1.FlowEvent) string {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(e)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	// protojson's spacing is unstable by design; a line is a line.
	return strings.ReplaceAll(string(b), "\n", " ")
}

// Table prints fixed-width columns, one event per line.
type Table struct{}

const tableFormat = "%-12s %-14s %-11s %-6s %-40s %-40s %12s %12s %9s %7s %10s"

// Header implements header.
func (Table) Header() string {
	return fmt.Sprintf(tableFormat, "TIME", "NODE", "VERDICT", "HOP", "SOURCE", "DESTINATION", "SENT", "RECEIVED", "SRTT", "RETRANS", "DURATION")
}

// Format implements Format.
func (Table) Format(e *flowv1.FlowEvent) string {
	return fmt.Sprintf(tableFormat,
		time.Unix(0, e.GetTimeUnixNano()).Format("15:04:05.000"),
		e.GetNode(),
		e.GetVerdict().String(),
		e.GetHop(),
		Endpoint(e.GetSource(), false),
		Endpoint(e.GetDestination(), true),
		Bytes(e.GetBytesSent()),
		Bytes(e.GetBytesReceived()),
		(time.Duration(e.GetSrttUs()) * time.Microsecond).String(),
		strconv.FormatUint(uint64(e.GetRetransmits()), 10),
		time.Duration(e.GetDurationNanos()).Round(time.Millisecond).String(),
	)
}

// Endpoint renders a flow end: "namespace/pod:port" for a known pod,
// "namespace/service:port" for a Service's cluster IP, else "ip:port"; a
// source's ephemeral port is left out.
func Endpoint(ep *flowv1.Endpoint, withPort bool) string {
	s := ep.GetIp()
	if strings.Contains(s, ":") {
		s = "[" + s + "]"
	}
	switch {
	case ep.GetPod() != "":
		s = ep.GetNamespace() + "/" + ep.GetPod()
	case ep.GetService() != "":
		s = ep.GetNamespace() + "/" + ep.GetService()
	}
	if s == "" {
		s = "?"
	}
	if withPort && ep.GetPort() != 0 {
		s += ":" + strconv.FormatUint(uint64(ep.GetPort()), 10)
	}
	return s
}

// Bytes renders a byte count in binary units.
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
