package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/warrenmesh/warren/internal/sockfile"
	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// Handler answers the plugin's calls: the agent's reconciler, which enrolls
// and unenrolls the pods.
type Handler interface {
	CNIAdd(ctx context.Context, req cniapi.AddRequest) (cniapi.AddResponse, error)
	CNIDel(ctx context.Context, req cniapi.DelRequest) error
}

// Server serves the warren-cni plugin on a Unix socket.
type Server struct {
	ln  *sockfile.Listener
	srv *http.Server
}

// Listen listens on socket (cniapi.DefaultSocket if empty), replacing a
// socket file already there, and serves h's CNIAdd and CNIDel.
func Listen(socket string, h Handler, log *slog.Logger) (*Server, error) {
	if socket == "" {
		socket = cniapi.DefaultSocket
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A previous agent's socket is replaced (it finishes the calls it has),
	// and that agent leaves this one's when it exits.
	ln, err := sockfile.Listen("unix", socket, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cni socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cniapi.PathAdd, func(w http.ResponseWriter, req *http.Request) {
		var in cniapi.AddRequest
		if !decode(w, req, &in) {
			return
		}
		start := time.Now()
		out, err := h.CNIAdd(req.Context(), in)
		if err != nil {
			log.Warn("cni add refused", "pod", in.Namespace+"/"+in.Name, "err", err)
			writeJSON(w, http.StatusInternalServerError, cniapi.ErrorResponse{Error: err.Error()})
			return
		}
		log.Info("cni add", "pod", in.Namespace+"/"+in.Name, "enrolled", out.Enrolled, "reason", out.Reason, "took", time.Since(start))
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST "+cniapi.PathDel, func(w http.ResponseWriter, req *http.Request) {
		var in cniapi.DelRequest
		if !decode(w, req, &in) {
			return
		}
		if err := h.CNIDel(req.Context(), in); err != nil {
			log.Warn("cni del failed", "pod", in.Namespace+"/"+in.Name, "err", err)
			writeJSON(w, http.StatusInternalServerError, cniapi.ErrorResponse{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	return s, nil
}

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.srv.Close() })
	defer stop()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("cni server: %w", err)
	}
	return nil
}

// Close stops serving and removes the socket file, unless another agent's
// socket replaced it.
func (s *Server) Close() error {
	err := s.srv.Close()
	if lerr := s.ln.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) {
		err = errors.Join(err, lerr)
	}
	return err
}

func decode(w http.ResponseWriter, req *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 1<<20)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, cniapi.ErrorResponse{Error: "bad request: " + err.Error()})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
