package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"kubetune.io/router/internal/config"
	"kubetune.io/router/internal/policy"
)

// variant is one config generation's view of a variant: immutable apart from its round-robin cursor and
// lazily created metric children.
type variant struct {
	name        string
	weight      int
	ready       bool
	endpoints   []string
	servedModel string // "" = keep the client's model
	rewrite     bool
	cursor      atomic.Uint64
	user        atomic.Pointer[series]
	synthetic   atomic.Pointer[series]
	metrics     *Metrics
}

func (v *variant) series(source string) *series {
	slot := &v.user
	if source == SourceSynthetic {
		slot = &v.synthetic
	}
	if s := slot.Load(); s != nil {
		return s
	}
	s := v.metrics.series(v.name, source)
	if !slot.CompareAndSwap(nil, s) {
		return slot.Load()
	}
	return s
}

// generation is one loaded config; a request keeps the one it started with, so a reload never changes a
// request midway.
type generation struct {
	cfg      *config.Config
	variants []*variant
	byName   map[string]*variant
	targets  []*policy.Target // routable as configured (no endpoint cooling down)
	sticky   string
	readTO   time.Duration
	connTO   time.Duration
	totalTO  time.Duration // 0 = unbounded
	cooldown time.Duration
}

func newGeneration(cfg *config.Config, m *Metrics) *generation {
	g := &generation{
		cfg:      cfg,
		byName:   make(map[string]*variant, len(cfg.Variants)),
		readTO:   config.Seconds(cfg.Timeouts.ReadS),
		connTO:   config.Seconds(cfg.Timeouts.ConnectS),
		cooldown: config.Seconds(cfg.EndpointCooldownS),
	}
	if cfg.Timeouts.TotalS != nil {
		g.totalTO = config.Seconds(*cfg.Timeouts.TotalS)
	}
	if cfg.StickyHeader != nil {
		g.sticky = *cfg.StickyHeader
	}
	for _, cv := range cfg.Variants {
		v := &variant{name: cv.Name, weight: cv.Weight, ready: cv.Ready, endpoints: cv.Endpoints, metrics: m}
		if cv.ServedModel != nil {
			v.servedModel, v.rewrite = *cv.ServedModel, true
		}
		g.variants = append(g.variants, v)
		g.byName[v.name] = v
		g.targets = append(g.targets, policy.NewTarget(v.name, v.weight, v.ready && len(v.endpoints) > 0))
	}
	return g
}

// health is passive endpoint health: an endpoint that refused a connection is skipped for a cooldown.
type health struct {
	mu        sync.Mutex
	downUntil map[string]time.Time
	down      atomic.Int32 // len(downUntil): the common case (nothing down) takes no lock
}

func (h *health) isUp(endpoint string, now time.Time) bool {
	until, found := h.downUntil[endpoint]
	return !found || !until.After(now)
}

// State is the loaded config plus endpoint health.
type State struct {
	metrics *Metrics
	current atomic.Pointer[generation]
	health  health
	mu      sync.Mutex // serialises installs and gauge updates
}

func NewState(cfg *config.Config, m *Metrics) *State {
	s := &State{metrics: m}
	s.health.downUntil = map[string]time.Time{}
	s.Install(cfg)
	return s
}

// Install swaps in a new config; requests in flight keep the generation they started with.
func (s *State) Install(cfg *config.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installLocked(cfg)
}

func (s *State) installLocked(cfg *config.Config) {
	old := s.current.Load()
	g := newGeneration(cfg, s.metrics)
	s.current.Store(g)
	if old != nil {
		for _, v := range old.variants {
			if _, kept := g.byName[v.name]; !kept {
				s.metrics.weight.DeleteLabelValues(v.name)
				s.metrics.ready.DeleteLabelValues(v.name)
			}
		}
	}
	s.refreshGauges(g)
}

// InstallIfCurrent installs cfg unless the config served now has a higher revision; it reports whether
// cfg is installed and the revision served afterwards.
func (s *State) InstallIfCurrent(cfg *config.Config) (bool, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if serving := s.current.Load().cfg.Revision; cfg.Revision < serving {
		return false, serving
	}
	s.installLocked(cfg)
	return true, cfg.Revision
}

func (s *State) Config() *config.Config { return s.current.Load().cfg }

func (s *State) generation() *generation { return s.current.Load() }

// targets is the policy's view of g now: a variant whose endpoints all cool down is not routable.
func (s *State) targets(g *generation) []*policy.Target {
	if s.health.down.Load() == 0 {
		return g.targets
	}
	now := time.Now()
	s.health.mu.Lock()
	expired := false
	for e, until := range s.health.downUntil {
		if !until.After(now) {
			delete(s.health.downUntil, e)
			expired = true
		}
	}
	s.health.down.Store(int32(len(s.health.downUntil)))
	out := make([]*policy.Target, len(g.targets))
	for i, t := range g.targets {
		v := g.variants[i]
		routable := t.Routable && s.anyUpLocked(v, now)
		if routable == t.Routable {
			out[i] = t
		} else {
			out[i] = &policy.Target{Name: t.Name, Weight: t.Weight, Routable: false, Seed: t.Seed}
		}
	}
	s.health.mu.Unlock()
	if expired {
		s.refreshGauges(g)
	}
	return out
}

func (s *State) anyUpLocked(v *variant, now time.Time) bool {
	for _, e := range v.endpoints {
		if s.health.isUp(e, now) {
			return true
		}
	}
	return false
}

// endpoints of v in the order to try them: live ones first, the start rotating for round robin.
func (s *State) endpoints(v *variant) []string {
	if len(v.endpoints) == 1 {
		return v.endpoints
	}
	n := len(v.endpoints)
	start := int(v.cursor.Add(1)-1) % n
	live := make([]string, 0, n)
	var down []string
	now := time.Now()
	checkHealth := s.health.down.Load() > 0
	if checkHealth {
		s.health.mu.Lock()
		defer s.health.mu.Unlock()
	}
	for i := range n {
		e := v.endpoints[(start+i)%n]
		if !checkHealth || s.health.isUp(e, now) {
			live = append(live, e)
		} else {
			down = append(down, e)
		}
	}
	return append(live, down...)
}

func (s *State) endpointFailed(endpoint string, cooldown time.Duration) {
	s.health.mu.Lock()
	s.health.downUntil[endpoint] = time.Now().Add(cooldown)
	s.health.down.Store(int32(len(s.health.downUntil)))
	s.health.mu.Unlock()
	s.refreshGauges(s.generation())
}

func (s *State) endpointOK(endpoint string) {
	if s.health.down.Load() == 0 {
		return
	}
	s.health.mu.Lock()
	_, was := s.health.downUntil[endpoint]
	delete(s.health.downUntil, endpoint)
	s.health.down.Store(int32(len(s.health.downUntil)))
	s.health.mu.Unlock()
	if was {
		s.refreshGauges(s.generation())
	}
}

// Routable reports, per variant of the current config, whether it can take traffic now.
func (s *State) Routable() map[string]bool {
	g := s.generation()
	out := make(map[string]bool, len(g.variants))
	for _, t := range s.targets(g) {
		out[t.Name] = t.Routable
	}
	return out
}

// Ready is true while some variant can take split traffic.
func (s *State) Ready() bool {
	return len(policy.Candidates(s.targets(s.generation()))) > 0
}

func (s *State) refreshGauges(g *generation) {
	now := time.Now()
	s.health.mu.Lock()
	routable := make([]bool, len(g.variants))
	for i, v := range g.variants {
		routable[i] = v.ready && len(v.endpoints) > 0 && s.anyUpLocked(v, now)
	}
	s.health.mu.Unlock()
	for i, v := range g.variants {
		s.metrics.weight.WithLabelValues(v.name).Set(float64(v.weight))
		ready := 0.0
		if routable[i] {
			ready = 1
		}
		s.metrics.ready.WithLabelValues(v.name).Set(ready)
	}
}

// RefreshGauges brings variant_ready up to date (a cooldown may have expired since the last request).
func (s *State) RefreshGauges() {
	s.targets(s.generation())
	s.refreshGauges(s.generation())
}
