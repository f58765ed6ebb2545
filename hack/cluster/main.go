// Command cluster runs a real multi-node Kubernetes on this machine, without Docker, for the
// demo, the end-to-end tests and the benchmarks.
//
//	go run ./hack/cluster up [--nodes N]   bring it up, or reuse the running one
//	go run ./hack/cluster down             stop everything it started, remove all its state
//	go run ./hack/cluster status           processes, apiserver health, nodes
//	go run ./hack/cluster kubeconfig       print the admin kubeconfig's path (for the host)
//	go run ./hack/cluster load-images      build images from cmd/ and test/apps/, import them into every node
//	go run ./hack/cluster logs COMPONENT   print a component's log (kube-apiserver, node1/kubelet, ...)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/warrenmesh/warren/hack/cluster/localcluster"
)

const usage = `usage: cluster <verb> [flags]

verbs:
  up [--nodes N]     bring up the local cluster (default 2 nodes), or reuse the running one
  down               stop everything it started and remove its state
  status             show processes, apiserver health and nodes
  kubeconfig         print the path of the admin kubeconfig usable from this host
  load-images        build images of cmd/* and test/apps/*, import them into every node
  logs COMPONENT     print a component's log (etcd, kube-apiserver, node1/kubelet, ...)
  prometheus         run Prometheus on the cluster (scrapes annotated pods); host: http://127.0.0.1:19090
  mesh-overlay       write a kustomization of manifests/ with the loaded images, print its
                     directory (kubectl apply -k "$(cluster mesh-overlay)" installs Warren)

environment:
  WARREN_CACHE       cache for binaries and cluster state (default ~/.cache/warren)
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	verb, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	cfg := localcluster.DefaultConfig()
	nodes := fs.Int("nodes", cfg.Nodes, "number of nodes (up)")
	_ = fs.Parse(args)
	cfg.Nodes = *nodes
	nodesSet := false
	fs.Visit(func(f *flag.Flag) { nodesSet = nodesSet || f.Name == "nodes" })
	if n, ok := cfg.Running(); ok && !nodesSet {
		cfg.Nodes = n // `up` without --nodes reuses whatever runs
	}
	repo, err := repoRoot()
	if err == nil {
		cfg.RepoDir = repo
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runVerb(ctx, &cfg, verb, fs.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "cluster "+verb+":", err)
		os.Exit(1)
	}
}

func runVerb(ctx context.Context, cfg *localcluster.Config, verb string, args []string) error {
	switch verb {
	case "up":
		return cfg.Up(ctx)
	case "down":
		if err := cfg.Down(ctx); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "==> cluster removed")
		return nil
	case "status":
		return cfg.Status(ctx, os.Stdout)
	case "kubeconfig":
		if _, err := os.Stat(cfg.KubeconfigPath()); err != nil {
			return fmt.Errorf("no cluster: run `go run ./hack/cluster up` first")
		}
		fmt.Println(cfg.KubeconfigPath())
		return nil
	case "load-images":
		if n, ok := cfg.Running(); !ok {
			return fmt.Errorf("no running cluster: run `go run ./hack/cluster up` first")
		} else {
			cfg.Nodes = n
		}
		refs, err := cfg.LoadImages(ctx)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(refs))
		for n := range refs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Printf("%s=%s\n", n, refs[n])
		}
		return nil
	case "prometheus":
		if err := cfg.StartPrometheus(ctx); err != nil {
			return err
		}
		fmt.Println("http://" + localcluster.PrometheusHostAddr)
		return nil
	case "mesh-overlay":
		dir, err := cfg.MeshOverlay()
		if err != nil {
			return err
		}
		fmt.Println(dir)
		return nil
	case "logs":
		if len(args) != 1 {
			return fmt.Errorf("usage: logs COMPONENT")
		}
		return cfg.Logs(args[0], os.Stdout)
	default:
		return fmt.Errorf("unknown verb %q\n%s", verb, usage)
	}
}

// repoRoot finds the Warren checkout (the module root) to build images from.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the Warren module")
	}
	return filepath.Dir(mod), nil
}
