package invoker

import (
	"errors"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Outcomes of sockfaas_invocations_total.
const (
	outcomeOK            = "ok"
	outcomeFunctionError = "function_error"
	outcomeTimeout       = "timeout"
	outcomeOverloaded    = "overloaded"
	outcomeNotFound      = "not_found"
	outcomeError         = "error"
	// outcomeQueued: an asynchronous invocation was accepted; how it
	// ends is not seen by the HTTP layer.
	outcomeQueued = "queued"
)

// startKinds are the known values of Result.Start; anything else is
// counted as "other", so that a label's values stay few.
var startKinds = []string{"warm", "paused", "cold", "fresh"}

// latencyBuckets reach from a warm call's 100 µs to Lambda's longest
// timeout.
var latencyBuckets = []float64{
	.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5,
	1, 2.5, 5, 10, 30, 60, 300, 900,
}

// metrics are the HTTP layer's series. The function label carries only
// names of deployed functions: a call for a name that does not exist is
// counted under function="", so that callers cannot make series at will.
type httpMetrics struct {
	svc                Service
	invocations        *prometheus.CounterVec
	starts             *prometheus.CounterVec
	invocationDuration *prometheus.HistogramVec
	startDuration      *prometheus.HistogramVec
	requestDuration    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, svc Service, log zerolog.Logger) *httpMetrics {
	m := &httpMetrics{
		svc: svc,
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockfaas_invocations_total",
			Help: "Invocations through the HTTP APIs by outcome: ok, function_error, timeout, overloaded, not_found, error; queued for accepted asynchronous ones.",
		}, []string{"function", "outcome"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockfaas_starts_total",
			Help: "Completed synchronous invocations by where their instance came from: warm, paused, cold (zygote fork into a cached sandbox) or fresh.",
		}, []string{"function", "start"}),
		invocationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sockfaas_invocation_duration_seconds",
			Help:    "Duration of completed synchronous invocations as the invoker measured it, start of the instance included.",
			Buckets: latencyBuckets,
		}, []string{"function", "start"}),
		startDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sockfaas_start_duration_seconds",
			Help:    "Time completed synchronous invocations spent getting an instance (warm, paused: resume, cold: zygote fork, fresh: new interpreter); the rest of sockfaas_invocation_duration_seconds is the handler's run.",
			Buckets: latencyBuckets,
		}, []string{"function", "start"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sockfaas_request_duration_seconds",
			Help:    "Duration of HTTP requests by route pattern (unmatched, unauthorized for requests no route served).",
			Buckets: latencyBuckets,
		}, []string{"route"}),
	}
	m.invocations = registerCollector(reg, m.invocations, log)
	m.starts = registerCollector(reg, m.starts, log)
	m.invocationDuration = registerCollector(reg, m.invocationDuration, log)
	m.startDuration = registerCollector(reg, m.startDuration, log)
	m.requestDuration = registerCollector(reg, m.requestDuration, log)
	registerCollector(reg, newStatusCollector(svc), log)
	return m
}

// register registers c, or returns the collector already registered in
// its place (two handlers on one Registerer share series). Registration
// cannot otherwise fail for these fixed, consistent descriptions; if it
// does, the error is logged and the series go unexported.
func registerCollector[C prometheus.Collector](reg prometheus.Registerer, c C, log zerolog.Logger) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	log.Error().Err(err).Msg("register metrics")
	return c
}

func outcomeOf(res *Result, err error) string {
	switch {
	case err == nil && res.FunctionError:
		return outcomeFunctionError
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrNotFound):
		return outcomeNotFound
	case errors.Is(err, ErrOverloaded):
		return outcomeOverloaded
	case errors.Is(err, ErrTimeout):
		return outcomeTimeout
	case errors.Is(err, ErrFunctionCrashed):
		return outcomeFunctionError
	}
	return outcomeError
}

// functionLabel is name if the outcome proves the function exists or a
// lookup finds it, "" otherwise. The lookup only happens for failures.
func (m *httpMetrics) functionLabel(name, outcome string) string {
	switch outcome {
	case outcomeOK, outcomeFunctionError, outcomeTimeout:
		return name
	case outcomeNotFound:
		return ""
	}
	if _, err := m.svc.Function(name); err != nil {
		return ""
	}
	return name
}

// invoked counts a synchronous invocation.
func (m *httpMetrics) invoked(name string, res *Result, err error) {
	outcome := outcomeOf(res, err)
	m.invocations.WithLabelValues(m.functionLabel(name, outcome), outcome).Inc()
	if err != nil {
		return
	}
	start := res.Start
	if !slices.Contains(startKinds, start) {
		start = "other"
	}
	m.starts.WithLabelValues(name, start).Inc()
	m.invocationDuration.WithLabelValues(name, start).Observe(res.Duration.Seconds())
	m.startDuration.WithLabelValues(name, start).Observe(res.StartDuration.Seconds())
}

// queued counts the submission of an asynchronous invocation.
func (m *httpMetrics) queued(name string, err error) {
	outcome := outcomeQueued
	if err != nil {
		outcome = outcomeOf(nil, err)
	}
	m.invocations.WithLabelValues(m.functionLabel(name, outcome), outcome).Inc()
}

// forget drops a removed function's series.
func (m *httpMetrics) forget(name string) {
	labels := prometheus.Labels{"function": name}
	m.invocations.DeletePartialMatch(labels)
	m.starts.DeletePartialMatch(labels)
	m.invocationDuration.DeletePartialMatch(labels)
	m.startDuration.DeletePartialMatch(labels)
}

// statusCollector turns Service.Status into gauges at each scrape, so that
// they are never stale and cost nothing between scrapes.
type statusCollector struct {
	svc       Service
	instances *prometheus.Desc
	zygotes   *prometheus.Desc
	generic   *prometheus.Desc
	memory    *prometheus.Desc
	functions *prometheus.Desc
	evictions *prometheus.Desc
}

// instanceStates are always exported, 0 when no instance is in them, so
// that a state's series does not come and go.
var instanceStates = []string{"busy", "idle", "paused"}

func newStatusCollector(svc Service) *statusCollector {
	return &statusCollector{
		svc:       svc,
		instances: prometheus.NewDesc("sockfaas_instances", "Live function instances by state: busy, idle or paused.", []string{"state"}, nil),
		zygotes:   prometheus.NewDesc("sockfaas_zygotes", "Zygotes in the zygote tree.", nil, nil),
		generic:   prometheus.NewDesc("sockfaas_generic_cached", "Ready sandboxes not yet bound to a function (the generic sandbox cache).", nil, nil),
		memory:    prometheus.NewDesc("sockfaas_memory_bytes", "Memory the invoker counts in use by its instances, zygotes and cached sandboxes.", nil, nil),
		functions: prometheus.NewDesc("sockfaas_functions", "Deployed functions.", nil, nil),
		evictions: prometheus.NewDesc("sockfaas_evictions_total", "Instances closed to stay within the memory budget (or a per-function idle cap).", nil, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.zygotes
	ch <- c.generic
	ch <- c.memory
	ch <- c.functions
	ch <- c.evictions
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.svc.Status()
	byState := map[string]int{}
	for _, s := range instanceStates {
		byState[s] = 0
	}
	for _, in := range st.Instances {
		byState[in.State]++
	}
	for state, n := range byState {
		sendGauge(ch, c.instances, float64(n), state)
	}
	sendGauge(ch, c.zygotes, float64(len(st.Zygotes)))
	sendGauge(ch, c.generic, float64(st.GenericCached))
	sendGauge(ch, c.memory, float64(st.MemoryBytes))
	sendGauge(ch, c.functions, float64(st.Functions))
	if m, err := prometheus.NewConstMetric(c.evictions, prometheus.CounterValue, float64(st.Evictions)); err == nil {
		ch <- m
	}
}

// gauge sends a gauge's value, or the error that made it (a label count
// that does not match the description) for the registry to report.
func sendGauge(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	ch <- m
}
