// Command warren-cni is Warren's chained CNI plugin (CNI spec 1.0). Placed
// after the node's primary plugin, at ADD it asks the node agent (over its
// Unix socket) to enroll the pod in the mesh before its containers start, and
// fails the pod's creation when the agent says the pod must be enrolled and
// cannot be, or cannot be asked: a pod never runs unprotected. Pods that are
// not to be enrolled pass through. DEL unenrolls, idempotently. The previous
// plugin's result is passed on unchanged.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// netConf is the plugin's entry in the conflist.
type netConf struct {
	types.NetConf
	// AgentSocket is the agent's socket; cniapi.DefaultSocket if empty.
	AgentSocket string `json:"agentSocket"`
	// Timeout bounds ADD's wait for the agent (a Go duration); 30s if empty.
	Timeout string `json:"timeout"`
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return cmdAdd(a, os.Stdout) },
		Del:    cmdDel,
		Check:  func(*skel.CmdArgs) error { return nil },
		Status: func(*skel.CmdArgs) error { return nil },
		GC:     func(*skel.CmdArgs) error { return nil },
	}, version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "warren-cni: enrolls pods in the Warren mesh")
}

func parseConf(stdin []byte) (*netConf, time.Duration, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, 0, fmt.Errorf("warren-cni: config: %w", err)
	}
	timeout := 30 * time.Second
	if conf.Timeout != "" {
		d, err := time.ParseDuration(conf.Timeout)
		if err != nil || d <= 0 {
			return nil, 0, fmt.Errorf("warren-cni: config: timeout %q: want a positive Go duration", conf.Timeout)
		}
		timeout = d
	}
	return conf, timeout, nil
}

// podArgs are the Kubernetes fields of CNI_ARGS (K8S_POD_NAMESPACE=...;...).
type podArgs struct{ namespace, name, uid, infraID string }

func parseArgs(s string) podArgs {
	var a podArgs
	for _, kv := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			a.namespace = v
		case "K8S_POD_NAME":
			a.name = v
		case "K8S_POD_UID":
			a.uid = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			a.infraID = v
		}
	}
	return a
}

func cmdAdd(args *skel.CmdArgs, out io.Writer) error {
	conf, timeout, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return errors.New("warren-cni: no previous result: chain it after the plugin that gives pods their addresses")
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return fmt.Errorf("warren-cni: previous result: %w", err)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("warren-cni: previous result: %w", err)
	}
	pa := parseArgs(args.Args)
	if pa.namespace != "" && pa.name != "" {
		if err := enroll(args, conf, timeout, pa, prev); err != nil {
			return err
		}
	}
	// Not a Kubernetes pod (no K8S_POD_*): nothing for the mesh to do.
	res, err := prev.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return fmt.Errorf("warren-cni: result: %w", err)
	}
	return res.PrintTo(out)
}

func enroll(args *skel.CmdArgs, conf *netConf, timeout time.Duration, pa podArgs, prev *current.Result) error {
	pod := pa.namespace + "/" + pa.name
	req := cniapi.AddRequest{Namespace: pa.namespace, Name: pa.name, UID: pa.uid, ContainerID: args.ContainerID, Netns: args.Netns}
	for _, ipc := range prev.IPs {
		// Only the sandbox's own interfaces' addresses are the pod's.
		if ipc.Interface != nil && *ipc.Interface >= 0 && *ipc.Interface < len(prev.Interfaces) && prev.Interfaces[*ipc.Interface].Sandbox == "" {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			req.IPs = append(req.IPs, ip.Unmap())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := cniapi.NewClient(conf.AgentSocket).Add(ctx, req)
	var opErr *net.OpError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("warren-cni: pod %s: the warren agent did not confirm enrollment within %v; not starting the pod unprotected: %w", pod, timeout, err)
	case errors.As(err, &opErr):
		return fmt.Errorf("warren-cni: pod %s: cannot reach the warren agent (is it running on this node?); not starting the pod unprotected: %w", pod, err)
	}
	return fmt.Errorf("warren-cni: pod %s: must be enrolled in the mesh and could not be: %w", pod, err)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, _, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	pa := parseArgs(args.Args)
	if pa.namespace == "" || pa.name == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = cniapi.NewClient(conf.AgentSocket).Del(ctx, cniapi.DelRequest{Namespace: pa.namespace, Name: pa.name, UID: pa.uid, ContainerID: args.ContainerID})
	if err != nil {
		// DEL must not block the pod's teardown: the agent's reconciler
		// unenrolls the pod anyway once it is deleted.
		fmt.Fprintf(os.Stderr, "warren-cni: pod %s/%s: unenroll: %v (the agent will unenroll it when the pod is gone)\n", pa.namespace, pa.name, err)
	}
	return nil
}
