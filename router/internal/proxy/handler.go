// Package proxy is the router's HTTP data path: route, rewrite, forward, stream back, and account for
// every request and every upstream attempt.
package proxy

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"kubetune.io/router/internal/config"
	"kubetune.io/router/internal/policy"
	"kubetune.io/router/internal/tokens"
)

// ClientClosed is recorded when the client goes away mid-response (nginx's convention).
const ClientClosed = 499

// maxBuffered is the largest response read whole (to count its usage tokens and send it in one write);
// larger ones (embeddings of long inputs) are relayed as they arrive.
const maxBuffered = 16 << 20

var (
	errReadTimeout  = errors.New("upstream read timeout")
	errTotalTimeout = errors.New("upstream total timeout")
)

// Options are the process-level settings (flags), as opposed to the hot-reloaded config.
type Options struct {
	MaxConcurrent       int           // requests proxied at once; beyond it 503 at once
	UpstreamIdleTimeout time.Duration // idle keep-alive to upstreams, below vLLM's (uvicorn's 5 s)
	// TokenRequired makes the override and synthetic headers count only with the shared token (Token).
	TokenRequired bool
}

// Handler serves the OpenAI API (/v1/*) and the router's own endpoints.
type Handler struct {
	state     *State
	metrics   *Metrics
	transport *http.Transport // https upstreams
	pool      *connPool       // plain-HTTP upstreams (in-cluster Services)
	slots     chan struct{}
	opts      Options
	token     atomic.Pointer[[]byte]
	metricsUI http.Handler
	// connectTimeout is the current config's; a dial started for an older generation may use the newer
	// value, which is harmless and keeps a context value off every request.
	connectTimeout atomic.Int64
}

func NewHandler(state *State, m *Metrics, opts Options) *Handler {
	h := &Handler{state: state, metrics: m, opts: opts, metricsUI: promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})}
	dialer := &net.Dialer{KeepAlive: 30 * time.Second}
	h.transport = &http.Transport{
		// Never an environment proxy: upstreams are in-cluster Services.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if d := time.Duration(h.connectTimeout.Load()); d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     opts.UpstreamIdleTimeout,
		TLSHandshakeTimeout: 10 * time.Second,
		// Bodies pass through byte for byte, with their content-encoding.
		DisableCompression: true,
		ReadBufferSize:     32 << 10,
		WriteBufferSize:    32 << 10,
	}
	h.pool = newConnPool(func() time.Duration { return time.Duration(h.connectTimeout.Load()) }, opts.UpstreamIdleTimeout)
	if opts.MaxConcurrent > 0 {
		h.slots = make(chan struct{}, opts.MaxConcurrent)
	}
	return h
}

// SetToken installs the shared token (nil or empty: nobody may override or mark traffic synthetic).
func (h *Handler) SetToken(token []byte) {
	t := bytes.TrimSpace(token)
	h.token.Store(&t)
}

// Close drops idle upstream connections.
func (h *Handler) Close() {
	h.pool.closeIdle()
	h.transport.CloseIdleConnections()
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case forwardable(p):
		h.proxy(w, r)
	case p == "/healthz":
		writeText(w, 200, "ok\n")
	case p == "/readyz":
		if h.state.Ready() {
			writeText(w, 200, "ready\n")
		} else {
			writeText(w, 503, "no variant can take traffic\n")
		}
	case p == "/metrics":
		h.state.RefreshGauges()
		h.metricsUI.ServeHTTP(w, r)
	case p == "/kubetune/config" && r.Method == http.MethodPut:
		h.pushedConfig(w, r)
	case p == "/kubetune/config":
		h.loadedConfig(w)
	default:
		// Only the OpenAI API is forwarded: vLLM's admin and debug paths are not the clients' business.
		h.refuse(w, 404, fmt.Sprintf("path %s is not served by the router", p), "not_found")
	}
}

// adminPaths: vLLM's runtime LoRA API, on in pods that serve adapters following a FineTuneSchedule. Only the
// operator may load and unload adapters (it calls the pods directly); through the router a client could unload
// the adapter a variant serves, or load any folder the pod can read.
var adminPaths = map[string]bool{"/v1/load_lora_adapter": true, "/v1/unload_lora_adapter": true}

// forwardable: the OpenAI API, /v1 and below, in canonical form (no dot segments or doubled slashes that an
// upstream would resolve to a path outside /v1), except vLLM's admin paths.
func forwardable(p string) bool {
	if p != "/v1" && !strings.HasPrefix(p, "/v1/") {
		return false
	}
	clean := path.Clean(p)
	if adminPaths[clean] {
		return false
	}
	return clean == p || clean+"/" == p
}

func (h *Handler) loadedConfig(w http.ResponseWriter) {
	doc := map[string]any{"config": h.state.Config(), "routable": h.state.Routable()}
	body, _ := json.Marshal(doc)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(body)
}

// maxPushedConfig bounds a pushed RouterConfig: kilobytes, even with many variants.
const maxPushedConfig = 1 << 20

// pushedConfig installs a RouterConfig the operator sends (PUT /kubetune/config, with the shared token) as
// soon as it writes the ConfigMap, which reaches the pod's volume only at the kubelet's next sync (up to
// about a minute). The file stays the durable copy: a restarted router starts from it, and a later file with
// a revision at least the pushed one replaces it.
func (h *Handler) pushedConfig(w http.ResponseWriter, r *http.Request) {
	if !h.opts.TokenRequired || !h.authorized(r) {
		// Fail closed: without a token file nobody may push, as a config names the upstreams.
		writeError(w, 403, "pushing a config needs the operator's token", "forbidden")
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxPushedConfig+1))
	if err != nil {
		writeError(w, 400, "config body unreadable: "+err.Error(), "invalid_request_error")
		return
	}
	if len(data) > maxPushedConfig {
		writeError(w, 413, "config body too large", "invalid_request_error")
		return
	}
	cfg, err := config.Parse(data)
	if err != nil {
		h.metrics.RecordReload("error")
		writeError(w, 400, err.Error(), "invalid_request_error")
		return
	}
	installed, revision := h.state.InstallIfCurrent(cfg)
	if installed {
		h.metrics.RecordReload("ok")
		slog.Info("router config pushed", "revision", revision, "weights", cfg.Weights())
	}
	body, _ := json.Marshal(map[string]any{"installed": installed, "revision": revision})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(body)
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, text)
}

func writeError(w http.ResponseWriter, status int, message, kind string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": message, "type": kind, "code": status}})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json; charset=utf-8")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// refuse answers before any upstream was tried, counted by status.
func (h *Handler) refuse(w http.ResponseWriter, status int, message, kind string) {
	h.metrics.routingErrors.WithLabelValues(strconv.Itoa(status)).Inc()
	writeError(w, status, message, kind)
}

// authorized: the request carries the operator's token, or no token is required (no --token-file).
func (h *Handler) authorized(r *http.Request) bool {
	if !h.opts.TokenRequired {
		return true
	}
	token := h.token.Load()
	got := r.Header.Get(TokenHeader)
	return token != nil && len(*token) > 0 && got != "" && subtle.ConstantTimeCompare([]byte(got), *token) == 1
}

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type tooLarge struct{}

func (tooLarge) Error() string { return "request body too large" }

func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge{}
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > 0 {
		body := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	// Chunked: counted as it arrives.
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, tooLarge{}
	}
	return body, nil
}

func (h *Handler) proxy(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	if h.slots != nil {
		select {
		case h.slots <- struct{}{}:
			defer func() { <-h.slots }()
		default:
			w.Header().Set("Retry-After", "1")
			h.refuse(w, 503, "router at its concurrency limit", "overloaded")
			return
		}
	}
	g := h.state.generation()
	cfg := g.cfg
	trusted := h.authorized(r)
	source := SourceUser
	if trusted && r.Header.Get(cfg.SyntheticHeader) != "" {
		source = SourceSynthetic
	}
	targets := h.state.targets(g)
	for _, t := range targets {
		if t.Weight > 0 && !t.Routable {
			h.metrics.skipped.WithLabelValues(t.Name).Inc()
		}
	}
	// The limit applies to the bytes the upstream would parse: compressed bodies are refused rather than
	// inflated past it (vLLM does not decode them either).
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		h.refuse(w, 415, "compressed request bodies are not accepted (Content-Encoding: "+ce+")", "unsupported_media_type")
		return
	}
	body, err := readBody(r, cfg.MaxBodyBytes)
	if err != nil {
		if _, big := err.(tooLarge); big {
			h.refuse(w, 413, fmt.Sprintf("request body exceeds %d bytes", cfg.MaxBodyBytes), "request_too_large")
		} else {
			h.refuse(w, 400, "could not read the request body", "bad_request")
		}
		return
	}
	req := policy.Request{}
	if trusted {
		req.Override = r.Header.Get(cfg.OverrideHeader)
	}
	if g.sticky != "" {
		if v := r.Header.Get(g.sticky); v != "" {
			req.StickyKey = "u:" + v
		} else if auth := r.Header.Get("Authorization"); auth != "" {
			// Only a hash of the API key is derived from it; it is never logged or labelled.
			req.StickyKey = "k:" + auth
		}
	}
	order, _, err := policy.Decide(targets, req, rand.Float64())
	if err != nil {
		var pe *policy.Error
		errors.As(err, &pe)
		if v, ok := g.byName[req.Override]; ok && req.Override != "" {
			// A request pinned to a variant that cannot take it now (its endpoints cooling down after a
			// refused connection) is that variant's failure: the canary analysis must see it, and no other
			// variant answers it in its place.
			v.series(source).count(pe.Status)
		}
		h.refuse(w, pe.Status, pe.Message, "routing_error")
		return
	}
	h.forward(w, r, g, body, order, source, started)
}

type attempt struct {
	v        *variant
	endpoint string
}

func (h *Handler) attempts(g *generation, order []*policy.Target) []attempt {
	limit := g.cfg.MaxAttempts
	out := make([]attempt, 0, limit)
	for _, t := range order {
		v := g.byName[t.Name]
		for _, e := range h.state.endpoints(v) {
			out = append(out, attempt{v, e})
			if len(out) == limit {
				return out
			}
		}
	}
	return out
}

// isConnectError: the upstream was never reached (refused, unreachable, DNS, connect timeout), so no byte
// of the request left the router and another endpoint may take it.
func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (h *Handler) forward(w http.ResponseWriter, r *http.Request, g *generation, body []byte, order []*policy.Target, source string, started time.Time) {
	header := make(http.Header, len(r.Header)+1)
	copyHeaders(header, r.Header, requestDrop)
	if _, ok := header["User-Agent"]; !ok {
		header["User-Agent"] = []string{""} // not Go's default: the upstream sees the client's or none
	}
	uri := r.URL.RequestURI()
	var last *series
	status, message := 502, "no upstream attempted"
	for _, a := range h.attempts(g, order) {
		s := a.v.series(source)
		last = s
		payload := body
		if a.v.rewrite && len(body) > 0 {
			payload = RewriteModel(body, a.v.servedModel)
		}
		done, answered := h.try(w, r, g, a, header, uri, payload, s, started)
		if answered {
			return
		}
		if done.kind == "client" {
			s.count(ClientClosed)
			s.duration.Observe(time.Since(started).Seconds())
			return
		}
		h.metrics.upstreamErrors.WithLabelValues(a.v.name, done.kind).Inc()
		// Every attempt counts against its variant: a refused canary attempt is a canary error even when
		// the stable variant then answers.
		s.count(done.status)
		status, message = done.status, done.message
		if done.kind != "connect" {
			break
		}
		h.state.endpointFailed(a.endpoint, g.cooldown)
	}
	if last != nil {
		last.duration.Observe(time.Since(started).Seconds())
	}
	writeError(w, status, message, "upstream_error")
}

type failure struct {
	kind    string // connect, timeout, reset, client
	status  int
	message string
}

// try makes one upstream attempt; answered means the response (or its failure) was relayed and counted.
func (h *Handler) try(w http.ResponseWriter, r *http.Request, g *generation, a attempt, header http.Header, uri string, payload []byte, s *series, started time.Time) (failure, bool) {
	s.inFlight.Inc()
	defer s.inFlight.Dec()
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	if h.connectTimeout.Load() != int64(g.connTO) {
		h.connectTimeout.Store(int64(g.connTO))
	}
	if g.totalTO > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadlineCause(ctx, started.Add(g.totalTO), errTotalTimeout)
		defer stop()
	}
	var reqBody io.Reader
	if len(payload) > 0 {
		reqBody = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, a.endpoint+uri, reqBody)
	if err != nil {
		return failure{"reset", 502, fmt.Sprintf("bad upstream URL for %s: %v", a.v.name, err)}, false
	}
	req.Header = header
	// The read timeout bounds upstream silence: until the response head (prefill), then between chunks.
	watchdog := time.AfterFunc(g.readTO, func() { cancel(errReadTimeout) })
	defer watchdog.Stop()
	var resp *http.Response
	if strings.HasPrefix(a.endpoint, "http://") {
		resp, err = h.pool.RoundTrip(req)
	} else {
		resp, err = h.transport.RoundTrip(req)
	}
	if err != nil {
		switch {
		case r.Context().Err() != nil:
			return failure{kind: "client"}, false
		case isConnectError(err):
			return failure{"connect", 502, fmt.Sprintf("upstream %s unreachable: %v", a.v.name, err)}, false
		case errors.Is(context.Cause(ctx), errReadTimeout) || errors.Is(context.Cause(ctx), errTotalTimeout):
			return failure{"timeout", 504, fmt.Sprintf("upstream %s timed out: %v", a.v.name, context.Cause(ctx))}, false
		default:
			// The request may have reached the model: never replayed (it could run twice).
			return failure{"reset", 502, fmt.Sprintf("upstream %s failed: %v", a.v.name, err)}, false
		}
	}
	defer resp.Body.Close()
	h.state.endpointOK(a.endpoint)
	h.relay(w, r, resp, a.v, s, started, watchdog, g.readTO)
	return failure{}, true
}

// idleReader pushes the read watchdog back after every chunk.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (ir idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.timer.Reset(ir.d)
	}
	return n, err
}

func (h *Handler) relay(w http.ResponseWriter, r *http.Request, resp *http.Response, v *variant, s *series, started time.Time, watchdog *time.Timer, readTO time.Duration) {
	contentType := resp.Header.Get("Content-Type")
	eventStream := strings.HasPrefix(contentType, "text/event-stream")
	hdr := w.Header()
	copyHeaders(hdr, resp.Header, responseDrop)
	if contentType == "" {
		hdr["Content-Type"] = nil // no sniffing: the client gets what the upstream sent
	}
	hdr[ServedByHeader] = []string{v.name}
	upstream := idleReader{resp.Body, watchdog, readTO}
	if !eventStream && resp.ContentLength >= 0 && resp.ContentLength <= maxBuffered {
		data := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(upstream, data); err != nil {
			for k := range hdr {
				delete(hdr, k)
			}
			if r.Context().Err() != nil {
				s.count(ClientClosed)
			} else {
				h.cut(v, s, err)
				writeError(w, 502, fmt.Sprintf("upstream %s failed mid-response", v.name), "upstream_error")
			}
			s.duration.Observe(time.Since(started).Seconds())
			return
		}
		if resp.StatusCode == 200 {
			if n, ok := tokens.OfBody(data); ok && n > 0 {
				s.outputTokens.Add(float64(n))
			}
		}
		hdr["Content-Length"] = []string{strconv.Itoa(len(data))}
		w.WriteHeader(resp.StatusCode)
		w.Write(data)
		s.count(resp.StatusCode)
		s.duration.Observe(time.Since(started).Seconds())
		return
	}
	// Streamed: relayed read by read, flushed at once (no buffering), time to first token at the first chunk.
	rc := http.NewResponseController(w)
	w.WriteHeader(resp.StatusCode)
	clientGone := rc.Flush() != nil
	var counter tokens.SSECounter
	countTokens := eventStream && resp.StatusCode == 200
	bufp := bodyPool.Get().(*[]byte)
	defer bodyPool.Put(bufp)
	buf := *bufp
	first := true
	var cut error
	for !clientGone {
		n, err := upstream.Read(buf)
		if n > 0 {
			if first {
				s.ttft.Observe(time.Since(started).Seconds())
				first = false
			}
			if countTokens {
				counter.Feed(buf[:n])
			}
			if _, werr := w.Write(buf[:n]); werr != nil || rc.Flush() != nil {
				clientGone = true
				break
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if r.Context().Err() != nil {
				clientGone = true
			} else {
				cut = err
			}
			break
		}
	}
	s.duration.Observe(time.Since(started).Seconds())
	switch {
	case clientGone:
		// Returning closes the upstream connection, which makes vLLM abort the generation.
		s.count(ClientClosed)
	case cut != nil:
		h.cut(v, s, cut)
		// Closing the connection without the terminating chunk tells the client the stream is incomplete.
		panic(http.ErrAbortHandler)
	default:
		if countTokens {
			s.outputTokens.Add(float64(counter.Tokens()))
		}
		s.count(resp.StatusCode)
	}
}

// cut: an upstream that failed after answering, counted as 502 for the analysis and never retried.
func (h *Handler) cut(v *variant, s *series, err error) {
	slog.Warn("upstream failed mid-response", "variant", v.name, "error", err)
	h.metrics.upstreamErrors.WithLabelValues(v.name, "stream").Inc()
	s.count(502)
}
