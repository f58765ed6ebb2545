// Package distribution serves the controller's model to data planes over
// gRPC (api/proto/mesh/v1): each subscriber gets its view (a node's ztunnel:
// its node's; a waypoint: every Service, route and peer) as a snapshot, then only what changed, one update in flight at a time, acked or
// nacked. Every subscriber has its own goroutine and a one-slot "something
// changed" signal, so a slow or stuck subscriber only delays itself: it gets
// the latest state when it catches up, not every intermediate one.
package distribution

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/policy"
)

// Options configure a Server.
type Options struct {
	Log *slog.Logger
	// Authn authenticates every call by its bearer token.
	Authn ca.Authenticator
	// Callers are the "namespace/serviceaccount" names that may subscribe
	// as nodes.
	Callers []string
	// Waypoints tells the waypoints' service accounts, which may subscribe
	// as themselves; nil: none.
	Waypoints ca.Waypoints
	// Signer answers SignCertificate; nil: Unimplemented.
	Signer  *ca.Signer
	Metrics *Metrics // optional
}

// Validate reports options a Server cannot work with.
func (o *Options) Validate() error {
	switch {
	case o.Log == nil:
		return errors.New("distribution: no logger")
	case o.Authn == nil:
		return errors.New("distribution: no authenticator")
	case len(o.Callers) == 0:
		return errors.New("distribution: no allowed callers")
	}
	return nil
}

// Server implements meshv1.DistributionServer.
type Server struct {
	meshv1.UnimplementedDistributionServer
	o    Options
	seed maphash.Seed

	mu        sync.Mutex
	model     *model.Model
	version   uint64
	changedAt time.Time
	subs      map[*subscriber]struct{}

	// The shared resources of the current model version, and the diffs to
	// it from the versions subscribers hold. Subscribers send the same
	// *meshv1.Resource values concurrently: gRPC only reads them.
	sharedMu  sync.Mutex
	sharedCur *sharedSet
	diffs     map[*sharedSet]*sharedDiff
}

type subscriber struct {
	view    view
	changed chan struct{} // one slot: coalesces changes
}

// view is what a subscriber gets: a node's ztunnel its node's workloads and
// policies, and every peer of other nodes and every Service; a waypoint
// ("<namespace>/<name>") every shared resource of a kind it serves from.
type view struct {
	node     string
	waypoint string
}

// waypointKinds are the key prefixes of the resources a waypoint serves
// from (WaypointConfig): its view forwards every shared resource of these
// kinds, whichever the model has.
var waypointKinds = []string{"service/", "route/", "grpcroute/", "peer/"}

// gets reports whether the view holds the shared entry e.
func (v view) gets(e entry) bool {
	if v.waypoint != "" {
		return slices.ContainsFunc(waypointKinds, func(p string) bool { return strings.HasPrefix(e.res.Key, p) })
	}
	// A peer on the subscriber's own node is one of its workloads.
	return e.node != v.node
}

// New returns a server with no model yet; subscribers wait for Publish.
func New(o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &Server{o: o, seed: maphash.MakeSeed(), subs: map[*subscriber]struct{}{}}, nil
}

// Publish makes m the current model and wakes every subscriber. It never
// blocks on a subscriber.
func (s *Server) Publish(m *model.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.model = m
	s.version++
	s.changedAt = time.Now()
	for sub := range s.subs {
		select {
		case sub.changed <- struct{}{}:
		default:
		}
	}
}

func (s *Server) current() (*model.Model, uint64, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.model, s.version, s.changedAt
}

// authenticate checks the call's bearer token and that the caller may use
// the API, and says as what (ca.CallerRole).
func (s *Server) authenticate(ctx context.Context) (ca.Caller, ca.Role, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	if v := md.Get("authorization"); len(v) == 1 {
		token, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	caller, err := s.o.Authn.Authenticate(ctx, token)
	if err != nil {
		if ca.ReasonOf(err) != "" {
			return caller, 0, status.Error(codes.Unauthenticated, err.Error())
		}
		return caller, 0, status.Error(codes.Unavailable, err.Error())
	}
	role, err := ca.CallerRole(ctx, caller, s.o.Callers, s.o.Waypoints)
	switch {
	case err == nil:
		return caller, role, nil
	case ca.ReasonOf(err) != "":
		return caller, 0, status.Errorf(codes.PermissionDenied, "service account %s/%s may not use the distribution API", caller.Namespace, caller.ServiceAccount)
	default:
		return caller, 0, status.Error(codes.Unavailable, err.Error())
	}
}

// hello checks the first message of a subscription against the caller's
// role and returns the view it asks for: a node's ztunnel its own node, a
// waypoint itself.
func hello(req *meshv1.SubscribeRequest, caller ca.Caller, role ca.Role) (view, error) {
	h := req.GetHello()
	v := view{node: h.GetNode(), waypoint: h.GetWaypoint()}
	switch {
	case h == nil || (v.node == "") == (v.waypoint == ""):
		return v, status.Error(codes.InvalidArgument, "the first message must be a Hello with either the node name or the waypoint")
	case role == ca.RoleNode && v.node == "":
		return v, status.Error(codes.PermissionDenied, "a node's ztunnel subscribes for its node, not as a waypoint")
	case role == ca.RoleNode && v.node != caller.Node:
		return v, status.Errorf(codes.PermissionDenied, "caller runs on node %q, not %q: a node gets only its own data", caller.Node, v.node)
	case role == ca.RoleWaypoint && v.waypoint != caller.Namespace+"/"+caller.ServiceAccount:
		return v, status.Errorf(codes.PermissionDenied, "caller is waypoint %s/%s, not %q: a waypoint subscribes as itself", caller.Namespace, caller.ServiceAccount, v.waypoint)
	case role != ca.RoleNode && role != ca.RoleWaypoint:
		return v, status.Error(codes.PermissionDenied, "unknown role")
	}
	return v, nil
}

// SignCertificate implements meshv1.DistributionServer.
func (s *Server) SignCertificate(ctx context.Context, req *meshv1.SignRequest) (*meshv1.SignResponse, error) {
	if s.o.Signer == nil {
		return nil, status.Error(codes.Unimplemented, "this controller does not sign")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	if v := md.Get("authorization"); len(v) == 1 {
		token, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	chain, err := s.o.Signer.SignCSR(ctx, token, req.GetCsr())
	switch r := ca.ReasonOf(err); {
	case err == nil:
		return &meshv1.SignResponse{Chain: chain, Roots: s.o.Signer.CA.RootsPEM()}, nil
	case r == ca.ReasonUnauthenticated:
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case r != "":
		return nil, status.Error(codes.PermissionDenied, err.Error())
	default:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
}

// answer is an Ack or Nack from the client.
type answer struct {
	version uint64
	nack    string
	ack     bool
}

// Subscribe implements meshv1.DistributionServer.
func (s *Server) Subscribe(stream meshv1.Distribution_SubscribeServer) error {
	ctx := stream.Context()
	caller, role, err := s.authenticate(ctx)
	if err != nil {
		s.o.Log.Warn("subscriber refused", "err", err, "node", caller.Node, "caller_ns", caller.Namespace, "caller_sa", caller.ServiceAccount)
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	v, err := hello(first, caller, role)
	if err != nil {
		s.o.Log.Warn("subscriber refused", "err", err, "node", caller.Node, "caller_ns", caller.Namespace, "caller_sa", caller.ServiceAccount)
		return err
	}

	sub := &subscriber{view: v, changed: make(chan struct{}, 1)}
	sub.changed <- struct{}{} // start with whatever model there is
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	s.o.Metrics.subscribed(1)
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
		s.o.Metrics.subscribed(-1)
	}()
	log := s.o.Log.With("node", v.node, "waypoint", v.waypoint, "caller_pod", caller.Pod)
	log.Info("subscriber connected")

	answers := make(chan answer)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			var a answer
			switch k := req.GetKind().(type) {
			case *meshv1.SubscribeRequest_Ack:
				a = answer{version: k.Ack.GetVersion(), ack: true}
			case *meshv1.SubscribeRequest_Nack:
				a = answer{version: k.Nack.GetVersion(), nack: cmp.Or(k.Nack.GetError(), "no reason given")}
			default:
				recvErr <- status.Error(codes.InvalidArgument, "after Hello, only Ack and Nack")
				return
			}
			select {
			case answers <- a:
			case <-ctx.Done():
				return
			}
		}
	}()

	var (
		acked    *clientState // what the client holds; nil: nothing yet
		inflight *pending
		dirty    bool
		cache    localCache
	)
	for {
		if dirty && inflight == nil {
			dirty = false
			p, err := s.next(v, acked, &cache)
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if p != nil {
				if err := stream.Send(p.update); err != nil {
					return err
				}
				inflight = p
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return nil
			}
			log.Info("subscriber gone", "err", err)
			return err
		case <-sub.changed:
			dirty = true
		case a := <-answers:
			if inflight == nil || a.version != inflight.update.Version {
				return status.Errorf(codes.InvalidArgument, "answer for version %d, which is not in flight", a.version)
			}
			kind := map[bool]string{true: "snapshot", false: "delta"}[inflight.update.Snapshot]
			if a.ack {
				acked = inflight.state
				s.o.Metrics.pushed(kind, "ack", time.Since(inflight.changedAt))
			} else {
				// The client keeps what it had; so do we. The refused
				// resources go again with the next change.
				log.Warn("update refused by subscriber", "version", a.version, "err", a.nack)
				s.o.Metrics.pushed(kind, "nack", 0)
			}
			inflight = nil
		}
	}
}

type pending struct {
	update    *meshv1.Update
	state     *clientState
	changedAt time.Time
}

// clientState is what a client holds: a version of the shared resources
// (the same for every node, so one diff between two versions serves every
// subscriber) and its node's own resources, sorted by key.
type clientState struct {
	shared *sharedSet
	local  []entry
}

// entry is a converted resource and the hash of its encoding.
type entry struct {
	res  *meshv1.Resource
	hash uint64
	node string // of a peer: its own node does not get it
}

func (s *Server) entry(r *meshv1.Resource, node string) (entry, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return entry{}, fmt.Errorf("marshal %s: %w", r.Key, err)
	}
	return entry{res: r, hash: maphash.Bytes(s.seed, b), node: node}, nil
}

func byKey(a, b entry) int { return strings.Compare(a.res.Key, b.res.Key) }

// sharedSet is the peers and services of one model version, converted.
// Converting and hashing is most of the cost of a change, so a set keeps
// the model values its entries came from, and the next version converts
// only the values that differ: a change costs what changed.
type sharedSet struct {
	version uint64
	// entries are sorted by key: the peers ("peer/" + UID, so by UID, as
	// peers are), the services, and the routes among them.
	entries  []entry
	peers    []*model.Workload // by UID; peers[i] made base[i]
	services []keyedService    // by key; services[i] made base[len(peers)+i]
	// base is the peers' and services' entries; entries adds the routes'
	// (few, converted again on every version) in key order.
	base []entry
}

func (s *sharedSet) getVersion() uint64 {
	if s == nil {
		return 0
	}
	return s.version
}

type keyedService struct {
	key string
	svc *model.Service
}

// sharedDiff takes a client from one sharedSet to another; both lists are
// sorted by key.
type sharedDiff struct {
	upserts  []entry
	removals []entry
}

// shared returns the shared resources of the model of version, converted
// once for all subscribers.
func (s *Server) shared(m *model.Model, version uint64) (*sharedSet, error) {
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	prev := s.sharedCur
	if prev != nil && prev.version == version {
		return prev, nil
	}
	if prev == nil {
		prev = &sharedSet{}
	}
	peers := m.PeerWorkloads()
	set := &sharedSet{version: version, peers: peers, entries: make([]entry, 0, len(peers)+len(m.Services))}
	j := 0
	for _, w := range peers {
		for j < len(prev.peers) && prev.peers[j].UID < w.UID {
			j++
		}
		p := w.Peer()
		if j < len(prev.peers) && prev.peers[j].UID == w.UID {
			if old := prev.peers[j].Peer(); prev.peers[j] == w || peerEqual(&old, &p) {
				set.entries = append(set.entries, prev.base[j])
				continue
			}
		}
		e, err := s.entry(peerResource(p), p.Node)
		if err != nil {
			return nil, err
		}
		set.entries = append(set.entries, e)
	}
	set.services = make([]keyedService, 0, len(m.Services))
	for _, svc := range m.Services {
		set.services = append(set.services, keyedService{key: serviceKey(svc), svc: svc})
	}
	slices.SortFunc(set.services, func(a, b keyedService) int { return strings.Compare(a.key, b.key) })
	prevSvcs := prev.base[len(prev.peers):]
	j = 0
	for _, ks := range set.services {
		for j < len(prev.services) && prev.services[j].key < ks.key {
			j++
		}
		if j < len(prev.services) && prev.services[j].key == ks.key && serviceEqual(prev.services[j].svc, ks.svc) {
			set.entries = append(set.entries, prevSvcs[j])
			continue
		}
		e, err := s.entry(serviceResource(*ks.svc), "")
		if err != nil {
			return nil, err
		}
		set.entries = append(set.entries, e)
	}
	set.base = set.entries
	if len(m.Routes) > 0 {
		set.entries = slices.Clone(set.base)
		for i := range m.Routes {
			e, err := s.entry(routeResource(&m.Routes[i]), "")
			if err != nil {
				return nil, err
			}
			set.entries = append(set.entries, e)
		}
		slices.SortFunc(set.entries, byKey)
	}
	// A subscriber that read the model just before a Publish asks for the
	// older version after another asked for the newer: it gets its set, the
	// newer one stays current.
	if version > s.sharedCur.getVersion() {
		s.sharedCur, s.diffs = set, map[*sharedSet]*sharedDiff{}
	}
	return set, nil
}

// diff returns the changes from one shared set to the current one, computed
// once for all the subscribers that hold from.
func (s *Server) diff(from, to *sharedSet) *sharedDiff {
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	if d, ok := s.diffs[from]; ok && s.sharedCur == to {
		return d
	}
	d := &sharedDiff{}
	d.upserts, d.removals = diffEntries(from.entries, to.entries)
	if s.sharedCur == to {
		s.diffs[from] = d
	}
	return d
}

// diffEntries walks two lists sorted by key: the entries of to that from
// lacks or holds with another hash, and the entries of from that to lacks.
func diffEntries(from, to []entry) (upserts, removals []entry) {
	i, j := 0, 0
	for i < len(from) || j < len(to) {
		var c int
		switch {
		case i == len(from):
			c = 1
		case j == len(to):
			c = -1
		default:
			c = byKey(from[i], to[j])
		}
		switch {
		case c < 0:
			removals = append(removals, from[i])
			i++
		case c > 0:
			upserts = append(upserts, to[j])
			j++
		default:
			if from[i].hash != to[j].hash {
				upserts = append(upserts, to[j])
			}
			i++
			j++
		}
	}
	return upserts, removals
}

// localCache holds a subscriber's last converted local workloads and
// policies with the model values they came from, so that the next version
// converts only what differs.
type localCache struct {
	workloads []model.LocalRef // by UID
	wEntries  []entry
	policies  []*policy.Policy // as in the model: by namespace and name
	pEntries  []entry
}

// update converts ws and ps, reusing the entries of equal values, and
// returns the entries sorted by key.
func (c *localCache) update(s *Server, ws []model.LocalRef, ps []*policy.Policy) ([]entry, error) {
	wEntries := make([]entry, 0, len(ws))
	j := 0
	for _, w := range ws {
		for j < len(c.workloads) && c.workloads[j].UID < w.UID {
			j++
		}
		if j < len(c.workloads) && c.workloads[j].Mode == w.Mode &&
			(c.workloads[j].Workload == w.Workload || workloadEqual(c.workloads[j].Workload, w.Workload)) {
			wEntries = append(wEntries, c.wEntries[j])
			continue
		}
		e, err := s.entry(workloadResource(model.NodeWorkload{Workload: *w.Workload, Mode: w.Mode}), "")
		if err != nil {
			return nil, err
		}
		wEntries = append(wEntries, e)
	}
	pEntries := make([]entry, 0, len(ps))
	j = 0
	for _, p := range ps {
		for j < len(c.policies) && policyOrder(c.policies[j], p) < 0 {
			j++
		}
		if j < len(c.policies) && (c.policies[j] == p || policyEqual(c.policies[j], p)) {
			pEntries = append(pEntries, c.pEntries[j])
			continue
		}
		e, err := s.entry(policyResource(p), "")
		if err != nil {
			return nil, err
		}
		pEntries = append(pEntries, e)
	}
	c.workloads, c.wEntries, c.policies, c.pEntries = ws, wEntries, ps, pEntries
	// "policy/" sorts before "workload/"; workloads are by UID already.
	local := slices.Concat(pEntries, wEntries)
	slices.SortFunc(local[:len(pEntries)], byKey)
	return local, nil
}

// next computes the update that takes a client of view v from acked (nil:
// nothing, so a snapshot) to the current model; nil when nothing changed.
// cache is the subscriber's own.
func (s *Server) next(v view, acked *clientState, cache *localCache) (*pending, error) {
	m, version, changedAt := s.current()
	if m == nil {
		return nil, nil
	}
	shared, err := s.shared(m, version)
	if err != nil {
		return nil, err
	}
	var local []entry
	if v.waypoint == "" {
		ws, ps := m.LocalRefs(v.node)
		if local, err = cache.update(s, ws, ps); err != nil {
			return nil, err
		}
	}
	state := &clientState{shared: shared, local: local}
	u := &meshv1.Update{Version: version, Snapshot: acked == nil}

	// Of the shared entries, the view holds those v.gets.
	var sharedUps, sharedRems []entry
	switch {
	case u.Snapshot:
		sharedUps = shared.entries
	case acked.shared != shared:
		d := s.diff(acked.shared, shared)
		sharedUps, sharedRems = d.upserts, d.removals
	}
	localUps, localRems := local, []entry(nil)
	if !u.Snapshot {
		localUps, localRems = diffEntries(acked.local, local)
	}
	if !u.Snapshot && len(localUps) == 0 && len(localRems) == 0 && !anyFor(sharedUps, v) && !anyFor(sharedRems, v) {
		// Nothing for this view; it now holds the current shared set too.
		acked.shared = shared
		return nil, nil
	}
	u.Upserts = make([]*meshv1.Resource, 0, len(localUps)+len(sharedUps))
	mergeByKey(localUps, sharedUps, v, func(e entry) { u.Upserts = append(u.Upserts, e.res) })
	mergeByKey(localRems, sharedRems, v, func(e entry) { u.Removals = append(u.Removals, e.res.Key) })
	return &pending{update: u, state: state, changedAt: changedAt}, nil
}

// anyFor reports whether es holds an entry v gets.
func anyFor(es []entry, v view) bool {
	for _, e := range es {
		if v.gets(e) {
			return true
		}
	}
	return false
}

// mergeByKey calls f in key order for every entry of local and of shared
// (both sorted by key) that v gets.
func mergeByKey(local, shared []entry, v view, f func(entry)) {
	i := 0
	for _, e := range shared {
		if !v.gets(e) {
			continue
		}
		for i < len(local) && byKey(local[i], e) < 0 {
			f(local[i])
			i++
		}
		f(e)
	}
	for _, e := range local[i:] {
		f(e)
	}
}

func (m *Metrics) subscribed(d float64) {
	if m != nil {
		m.subscribers.Add(d)
	}
}

func (m *Metrics) pushed(kind, answer string, latency time.Duration) {
	if m == nil {
		return
	}
	m.pushes.WithLabelValues(kind, answer).Inc()
	if answer == "ack" {
		m.ackLatency.Observe(latency.Seconds())
	}
}
