package waypoint

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/waypoint/model"
	"github.com/warrenmesh/warren/waypoint/retry"
)

// exchange is one request's way through the waypoint and what its
// telemetry reports.
type exchange struct {
	w     *Waypoint
	rw    http.ResponseWriter
	r     *http.Request
	info  *tunnelInfo
	st    *model.State
	start time.Time
	grpc  bool

	route      string
	service    string
	endpoint   netip.AddrPort
	status     int
	grpcStatus string
	reqBytes   countingBody
	respBytes  int64
}

// ServeHTTP serves one request that came through a tunnel.
func (w *Waypoint) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	ex := &exchange{w: w, rw: rw, r: r, start: time.Now(), grpc: isGRPC(r.Header), route: unknown, service: unknown}
	ex.info, _ = r.Context().Value(tunnelKey{}).(*tunnelInfo)
	ex.st = w.state.Load()
	ex.reqBytes.ReadCloser = r.Body
	r.Body = &ex.reqBytes
	defer ex.record()
	if ex.info == nil || ex.st == nil {
		ex.fail(http.StatusServiceUnavailable, "waypoint not ready")
		return
	}
	port, ok := ex.st.Lookup(ex.info.authority)
	if !ok || port.Routes == nil {
		// The Service left this waypoint since the tunnel opened.
		ex.fail(http.StatusServiceUnavailable, "service not served here")
		return
	}
	ex.service = port.Service.Key()
	rule, match := port.Routes.Match(r.Method, r.URL.Path, r.Header, r.URL.Query())
	if rule == nil {
		ex.fail(http.StatusNotFound, "no route")
		return
	}
	ex.route = rule.Route
	if rule.Redirect != nil {
		loc := rule.Redirect.Location(match, "http", r.Host, r.URL.Path, r.URL.RawQuery)
		rule.ResponseHeaders.Apply(rw.Header())
		rw.Header().Set("Location", loc)
		ex.writeHeader(rule.Redirect.Status)
		return
	}
	be, err := model.PickBackend(rule.Backends, rand.Int64N)
	if err != nil {
		ex.fail(http.StatusInternalServerError, "no backend")
		return
	}
	ex.service = be.Service.Key()
	ex.proxy(rule, match, be)
}

func isGRPC(h http.Header) bool {
	ct := h.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// countingBody counts the request body bytes read.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	if c.ReadCloser == nil {
		return 0, io.EOF
	}
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingBody) Close() error {
	if c.ReadCloser == nil {
		return nil
	}
	return c.ReadCloser.Close()
}

// hopHeaders are connection-specific (RFC 9110 7.6.1): never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// outgoing is the request to send upstream, before its endpoint: hop-by-hop
// headers gone, the rule's request filters applied.
func (ex *exchange) outgoing(ctx context.Context, rule *model.Rule, m *model.Match) *http.Request {
	r := ex.r
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.Close = false
	upType := upgradeType(r.Header)
	removeHopByHop(out.Header)
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers") // gRPC needs it
	}
	if upType != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", upType)
	}
	rule.RequestHeaders.Apply(out.Header)
	out.URL.Scheme = "http"
	if rw := rule.Rewrite; rw != nil {
		if rw.Hostname != "" {
			out.Host = rw.Hostname
		}
		if rw.Path != nil {
			out.URL.Path = rw.Path.Apply(m, r.URL.Path)
			out.URL.RawPath = ""
		}
	}
	return out
}

// proxy sends the request to an endpoint of be, retrying as the rule says,
// and answers with the response.
func (ex *exchange) proxy(rule *model.Rule, m *model.Match, be *model.Backend) {
	w, r := ex.w, ex.r
	upgrade := upgradeType(r.Header) != ""
	ctx := r.Context()
	if rule.RequestTimeout > 0 && !upgrade {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rule.RequestTimeout)
		defer cancel()
	}
	limit := 0
	if rule.Retry.Attempts > 0 || len(rule.Mirrors) > 0 {
		limit = w.o.RetryBufferBytes
	}
	var body *replayBody
	if r.ContentLength != 0 {
		body = newReplayBody(r.Body, limit)
	}
	out := ex.outgoing(ctx, rule, m)
	h2 := be.Port.Protocol.IsHTTP2() && !upgrade
	tr := w.ups.transport(callerKey{id: ex.info.caller, addr: ex.info.addr}, h2)
	defer ex.mirror(rule, out, body)

	tried := map[netip.AddrPort]bool{}
	for attempt := 1; ; attempt++ {
		addr, done, ok := w.pick(be.Port, tried)
		if !ok {
			ex.fail(http.StatusServiceUnavailable, "no healthy upstream")
			return
		}
		tried[addr] = true
		ex.endpoint = addr
		actx, acancel := ctx, context.CancelFunc(func() {})
		if rule.BackendTimeout > 0 && !upgrade {
			actx, acancel = context.WithTimeout(ctx, rule.BackendTimeout)
		}
		req := out.WithContext(actx)
		u := *out.URL
		u.Host = addr.String()
		req.URL = &u
		req.Body = http.NoBody
		if body != nil {
			v, ok := body.view()
			if !ok { // unreachable: views end only after a retry was allowed
				done()
				acancel()
				ex.fail(http.StatusBadGateway, "upstream failed")
				return
			}
			req.Body = v
		}
		res, err := tr.RoundTrip(req)
		o := outcome(res, err)
		again, wait := retry.Next(rule.Retry, attempt, o, rand.Int64N)
		if again && ctx.Err() == nil && (body == nil || !body.overflow()) {
			if res != nil {
				res.Body.Close()
			}
			done()
			acancel()
			if !sleep(ctx, wait) {
				ex.fail(http.StatusGatewayTimeout, "upstream request timeout")
				return
			}
			continue
		}
		if err != nil {
			done()
			acancel()
			switch {
			case ctx.Err() != nil && r.Context().Err() == nil, errors.Is(err, context.DeadlineExceeded):
				ex.fail(http.StatusGatewayTimeout, "upstream request timeout")
			case o.NotSent:
				var se *hbone.StatusError
				if errors.As(err, &se) && se.Code == http.StatusForbidden {
					ex.fail(http.StatusForbidden, "denied by the destination")
				} else {
					ex.fail(http.StatusServiceUnavailable, "upstream connect failure")
				}
			default:
				ex.fail(http.StatusBadGateway, "upstream reset")
			}
			if r.Context().Err() == nil {
				w.log.Debug("upstream request failed", "route", ex.route, "endpoint", addr, "attempts", attempt, "err", err)
			}
			return
		}
		ex.respond(res, rule, ctx)
		done()
		acancel()
		return
	}
}

func outcome(res *http.Response, err error) retry.Outcome {
	if err == nil {
		return retry.Outcome{Status: res.StatusCode}
	}
	var de *dialError
	if errors.As(err, &de) {
		return retry.Outcome{NotSent: true}
	}
	return retry.Outcome{Reset: true}
}

// sleep waits d unless ctx ends first (false).
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// respond copies the upstream response to the caller: headers without the
// hop-by-hop ones and with the rule's response filter, the body flushed as
// it comes for streams, then the trailers.
func (ex *exchange) respond(res *http.Response, rule *model.Rule, ctx context.Context) {
	defer res.Body.Close()
	rw := ex.rw
	if res.StatusCode == http.StatusSwitchingProtocols {
		ex.upgrade(res, rule)
		return
	}
	removeHopByHop(res.Header)
	h := rw.Header()
	for k, vs := range res.Header {
		h[k] = append(h[k][:0:0], vs...)
	}
	rule.ResponseHeaders.Apply(h)
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		h.Set("Trailer", strings.Join(keys, ", "))
	}
	ex.grpcStatus = res.Header.Get("Grpc-Status")
	ex.writeHeader(res.StatusCode)
	stream := res.ContentLength < 0 || ex.grpc
	rc := http.NewResponseController(rw)
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			if _, werr := rw.Write(buf[:n]); werr != nil {
				return // the caller went away
			}
			ex.respBytes += int64(n)
			if stream {
				rc.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// Cut mid-body (upstream reset or the route's timeout): the
			// caller must see a broken response, not a short one.
			if ctx.Err() != nil {
				ex.status = http.StatusGatewayTimeout
			}
			panic(http.ErrAbortHandler)
		}
	}
	if len(res.Trailer) > 0 {
		prefix := ""
		if len(res.Trailer) != announced {
			prefix = http.TrailerPrefix
		}
		for k, vs := range res.Trailer {
			h[prefix+k] = vs
		}
		if s := res.Trailer.Get("Grpc-Status"); s != "" {
			ex.grpcStatus = s
		}
	}
}

// upgrade joins the caller's connection and the upstream's after a 101
// (WebSocket and other HTTP/1.1 upgrades).
func (ex *exchange) upgrade(res *http.Response, rule *model.Rule) {
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		ex.fail(http.StatusBadGateway, "upstream upgrade failed")
		return
	}
	conn, brw, err := http.NewResponseController(ex.rw).Hijack()
	if err != nil {
		ex.fail(http.StatusBadGateway, "upgrade not possible")
		return
	}
	defer conn.Close()
	h := http.Header{}
	for k, vs := range res.Header {
		h[k] = vs
	}
	rule.ResponseHeaders.Apply(h)
	res.Header = h
	res.Body = nil
	ex.status = http.StatusSwitchingProtocols
	if err := res.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, _ := io.Copy(back, brw.Reader) // the bytes the server had buffered, then the connection
		ex.reqBytes.n += n
		if cw, ok := back.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			back.Close()
		}
	}()
	n, _ := io.Copy(conn, back)
	ex.respBytes += n
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	<-done
	back.Close()
}

func (ex *exchange) writeHeader(code int) {
	ex.status = code
	ex.rw.WriteHeader(code)
}

// grpcCodes are the gRPC statuses of the waypoint's own answers to gRPC
// calls (as Envoy maps them).
var grpcCodes = map[int]string{
	http.StatusBadRequest:          "13", // INTERNAL
	http.StatusForbidden:           "7",  // PERMISSION_DENIED
	http.StatusNotFound:            "12", // UNIMPLEMENTED
	http.StatusInternalServerError: "13",
	http.StatusBadGateway:          "14", // UNAVAILABLE
	http.StatusServiceUnavailable:  "14",
	http.StatusGatewayTimeout:      "4", // DEADLINE_EXCEEDED
}

// fail answers with the waypoint's own error: a short fixed text (never
// internal details), or to a gRPC call a trailers-only response with the
// matching grpc-status.
func (ex *exchange) fail(code int, msg string) {
	h := ex.rw.Header()
	clear(h)
	if ex.grpc {
		st := grpcCodes[code]
		if st == "" {
			st = "2" // UNKNOWN
		}
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", st)
		h.Set("Grpc-Message", msg)
		ex.grpcStatus = st
		ex.status = http.StatusOK
		ex.rw.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	ex.writeHeader(code)
	n, _ := io.WriteString(ex.rw, msg+"\n")
	ex.respBytes += int64(n)
}

func (ex *exchange) record() {
	if ex.status == 0 {
		ex.status = http.StatusOK // the handler wrote no header: net/http sends 200
	}
	var sw, sn, sp string
	if ex.info != nil {
		sw, sn, sp = peerLabels(ex.st, ex.info.caller, ex.info.addr)
	} else {
		sw, sn, sp = unknown, unknown, unknown
	}
	dw, dn, dp := destLabels(ex.st, ex.endpoint)
	gs := ex.grpcStatus
	if gs == "" {
		gs = "-"
	}
	lv := []string{strconv.Itoa(ex.status), gs, methodClass(ex.r.Method), ex.route, sw, sn, sp, dw, dn, dp, ex.service}
	m := ex.w.metrics
	m.requests.WithLabelValues(lv...).Inc()
	m.duration.WithLabelValues(lv...).Observe(time.Since(ex.start).Seconds())
	m.reqBytes.WithLabelValues(lv...).Add(float64(ex.reqBytes.n))
	m.respBytes.WithLabelValues(lv...).Add(float64(ex.respBytes))
}

// mirror sends a copy of the request to the rule's mirrors once the
// exchange is over, without waiting: only a request whose whole body was
// kept (or that had none) is mirrored, and at most cap(w.mirrors) at once.
func (ex *exchange) mirror(rule *model.Rule, out *http.Request, body *replayBody) {
	if len(rule.Mirrors) == 0 {
		return
	}
	w := ex.w
	var data []byte
	if body != nil {
		var ok bool
		if data, ok = body.complete(); !ok {
			w.metrics.mirrorsDropped.Inc()
			return
		}
	}
	key := callerKey{id: ex.info.caller, addr: ex.info.addr}
	timeout := rule.RequestTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	for _, mr := range rule.Mirrors {
		if mr.Percent < 100 && uint32(rand.IntN(100)) >= mr.Percent {
			continue
		}
		select {
		case w.mirrors <- struct{}{}:
		default:
			w.metrics.mirrorsDropped.Inc()
			continue
		}
		go func() {
			defer func() { <-w.mirrors }()
			ctx, cancel := context.WithTimeout(w.ctx, timeout)
			defer cancel()
			addr, done, ok := w.pick(mr.Backend.Port, nil)
			if !ok {
				return
			}
			defer done()
			req := out.Clone(ctx)
			req.URL.Host = addr.String()
			req.Body = http.NoBody
			if len(data) > 0 {
				req.Body = io.NopCloser(strings.NewReader(string(data)))
				req.ContentLength = int64(len(data))
			}
			tr := w.ups.transport(key, mr.Backend.Port.Protocol.IsHTTP2())
			res, err := tr.RoundTrip(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
			res.Body.Close()
		}()
	}
}
