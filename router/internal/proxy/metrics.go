package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Prefix of every series: the names and labels are the Python router's, so dashboards, alerts and the
// canary analysis (kubetune.analysis.queries) read them unchanged.
const Prefix = "kubetune_router_"

const (
	SourceUser      = "user"
	SourceSynthetic = "synthetic"
)

var (
	latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}
	ttftBuckets    = []float64{0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60}
)

// Metrics owns one registry. Every series carries `model_deployment` when the config names one, so
// variants named alike in two ModelDeployments of a namespace stay apart however Prometheus scrapes.
type Metrics struct {
	Registry       *prometheus.Registry
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	ttft           *prometheus.HistogramVec
	outputTokens   *prometheus.CounterVec
	inFlight       *prometheus.GaugeVec
	upstreamErrors *prometheus.CounterVec
	skipped        *prometheus.CounterVec
	routingErrors  *prometheus.CounterVec
	weight         *prometheus.GaugeVec
	ready          *prometheus.GaugeVec
	reloads        *prometheus.CounterVec
}

func NewMetrics(modelDeployment string) *Metrics {
	var constLabels prometheus.Labels
	if modelDeployment != "" {
		constLabels = prometheus.Labels{"model_deployment": modelDeployment}
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: Prefix + name, Help: help, ConstLabels: constLabels}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: Prefix + name, Help: help, ConstLabels: constLabels}, labels)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: Prefix + name, Help: help, Buckets: buckets, ConstLabels: constLabels,
		}, labels)
	}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: counter("requests_total", "Requests answered (and failed upstream attempts), by variant and status code.",
			"variant", "code", "source"),
		duration: histogram("request_duration_seconds", "Time from request received to last response byte.",
			latencyBuckets, "variant", "source"),
		ttft: histogram("time_to_first_token_seconds", "Time to first token: request received to first streamed body byte.",
			ttftBuckets, "variant", "source"),
		outputTokens: counter("output_tokens_total", "Output tokens, from usage or counted stream events.",
			"variant", "source"),
		inFlight:       gauge("in_flight", "Requests being proxied now.", "variant", "source"),
		upstreamErrors: counter("upstream_errors_total", "Failed upstream attempts (connect, timeout, reset, stream cut).", "variant", "kind"),
		skipped:        counter("variant_skipped_total", "Requests for which a weighted variant had no ready endpoint.", "variant"),
		routingErrors:  counter("routing_errors_total", "Requests refused before reaching any upstream.", "code"),
		weight:         gauge("variant_weight", "Configured weight, percent.", "variant"),
		ready:          gauge("variant_ready", "1 when the variant can take traffic.", "variant"),
		reloads:        counter("config_reloads_total", "Config file reloads by result.", "result"),
	}
	m.Registry.MustRegister(
		m.requests, m.duration, m.ttft, m.outputTokens, m.inFlight, m.upstreamErrors, m.skipped,
		m.routingErrors, m.weight, m.ready, m.reloads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// series are one (variant, source)'s children, resolved once per config so the hot path does no label
// lookups.
type series struct {
	duration     prometheus.Observer
	ttft         prometheus.Observer
	outputTokens prometheus.Counter
	inFlight     prometheus.Gauge
	ok           atomic.Pointer[prometheus.Counter] // code 200, the common case; created on first use
	requests     *prometheus.CounterVec
	variant      string
	source       string
}

func (m *Metrics) series(variant, source string) *series {
	return &series{
		duration:     m.duration.WithLabelValues(variant, source),
		ttft:         m.ttft.WithLabelValues(variant, source),
		outputTokens: m.outputTokens.WithLabelValues(variant, source),
		inFlight:     m.inFlight.WithLabelValues(variant, source),
		requests:     m.requests,
		variant:      variant,
		source:       source,
	}
}

func (s *series) count(code int) {
	if code != 200 {
		s.requests.WithLabelValues(s.variant, strconv.Itoa(code), s.source).Inc()
		return
	}
	ok := s.ok.Load()
	if ok == nil {
		c := s.requests.WithLabelValues(s.variant, "200", s.source)
		ok = &c
		s.ok.Store(ok)
	}
	(*ok).Inc()
}

// RecordReload counts a config reload by result ("ok" or "error").
func (m *Metrics) RecordReload(result string) { m.reloads.WithLabelValues(result).Inc() }
