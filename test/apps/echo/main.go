// Command echo is the test and demo workload: an HTTP server that answers with who served the
// request (pod name, namespace, node, IP) and who asked, and a small client for use with
// `kubectl exec` (`echo get URL`), so tests need no other image.
//
//	echo [serve] [-listen :8080]     serve (the default)
//	echo get [-n N] [-timeout D] [-interval D] URL
//	                                 GET URL N times (0: forever, errors logged and retried),
//	                                 print each body, fail on any error when N > 0
//	echo fs ls|mkdir|rmdir|cat PATH  look at or change the pod's files (hostPath checks)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Reply is what the server answers.
type Reply struct {
	Pod        string              `json:"pod"`
	Namespace  string              `json:"namespace"`
	Node       string              `json:"node"`
	PodIP      string              `json:"podIP"`
	Host       string              `json:"host"`
	Path       string              `json:"path"`
	RemoteAddr string              `json:"remoteAddr"`
	Headers    map[string][]string `json:"headers"`
}

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "get" || args[0] == "fs") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "get":
		err = get(args)
	case "fs":
		err = fsCmd(args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Reply{
			Pod: os.Getenv("POD_NAME"), Namespace: os.Getenv("POD_NAMESPACE"), Node: os.Getenv("NODE_NAME"),
			PodIP: os.Getenv("POD_IP"), Host: host, Path: r.URL.Path, RemoteAddr: r.RemoteAddr, Headers: r.Header,
		})
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("serving", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	n := fs.Int("n", 1, "number of requests, each on a new connection (0: forever)")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout per request")
	interval := fs.Duration("interval", 0, "pause between requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: echo get [-n N] URL")
	}
	c := &http.Client{Timeout: *timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; *n == 0 || i < *n; i++ {
		if i > 0 && *interval > 0 {
			time.Sleep(*interval)
		}
		body, err := getOnce(c, fs.Arg(0))
		if err != nil {
			if *n == 0 {
				fmt.Fprintln(os.Stderr, "echo:", err)
				continue
			}
			return err
		}
		os.Stdout.Write(body)
	}
	return nil
}

func getOnce(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// fsCmd lets tests look at a pod's view of its volumes without a shell in the image.
func fsCmd(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: echo fs ls|mkdir|rmdir|cat PATH")
	}
	p := args[1]
	switch args[0] {
	case "ls":
		entries, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			fmt.Println(e.Name())
		}
		return nil
	case "mkdir":
		return os.Mkdir(p, 0o755)
	case "rmdir":
		return os.Remove(p)
	case "cat":
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	return fmt.Errorf("fs: unknown operation %q", args[0])
}
