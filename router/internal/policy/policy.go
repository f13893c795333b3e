// Package policy decides which variant serves a request: pure functions of an immutable snapshot and the
// request's sticky key or override.
//
// Sticky assignment is weighted rendezvous hashing (highest random weight), bit for bit the Python router's
// (blake2b-64 of the key, splitmix64 per variant, score -weight/ln(u)): users stay on their variant across
// the upgrade. When one weight changes only users whose winning score crosses over move; a variant that
// leaves the split gives its users to their second choice and takes them back when it returns.
package policy

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"golang.org/x/crypto/blake2b"
)

// Target is a variant as the policy sees it.
type Target struct {
	Name     string
	Weight   int
	Routable bool // ready, with at least one endpoint not cooling down
	Seed     uint64
}

// NewTarget precomputes the variant's hash seed.
func NewTarget(name string, weight int, routable bool) *Target {
	return &Target{Name: name, Weight: weight, Routable: routable, Seed: KeyHash("variant:" + name)}
}

// KeyHash is blake2b with an 8-byte digest, read big-endian (Python: blake2b(key, digest_size=8)).
func KeyHash(key string) uint64 {
	h, _ := blake2b.New(8, nil) // sizes 1..64 without a key never fail
	h.Write([]byte(key))
	var sum [8]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// mix64 is the splitmix64 finaliser: a cheap, well-distributed bijection on 64-bit integers.
func mix64(x uint64) uint64 {
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// Score of a (key hash, target) pair; the highest wins.
func Score(base uint64, t *Target) float64 {
	// Uniform u in (0, 1]; -w / ln(u) makes P(win) proportional to w among independent draws.
	u := float64((mix64(base^t.Seed)>>11)+1) / (1 << 53)
	if u >= 1 {
		return math.Inf(1)
	}
	return -float64(t.Weight) / math.Log(u)
}

// RendezvousOrder ranks candidates by score for key, best first (ties by name, descending, as in Python).
func RendezvousOrder(candidates []*Target, key string) []*Target {
	base := KeyHash(key)
	type scored struct {
		score float64
		t     *Target
	}
	ranked := make([]scored, len(candidates))
	for i, t := range candidates {
		ranked[i] = scored{Score(base, t), t}
	}
	sort.SliceStable(ranked, func(i, j int) bool {
		if ranked[i].score != ranked[j].score {
			return ranked[i].score > ranked[j].score
		}
		return ranked[i].t.Name > ranked[j].t.Name
	})
	out := make([]*Target, len(ranked))
	for i, s := range ranked {
		out[i] = s.t
	}
	return out
}

// WeightedOrder puts the candidate picked by draw in [0, 1) over cumulative weights first, the others after
// in their order.
func WeightedOrder(candidates []*Target, draw float64) []*Target {
	total := 0
	for _, t := range candidates {
		total += t.Weight
	}
	point := draw * float64(total)
	cumulative := 0.0
	for i, t := range candidates {
		cumulative += float64(t.Weight)
		if point < cumulative {
			out := make([]*Target, 0, len(candidates))
			out = append(out, t)
			out = append(out, candidates[:i]...)
			return append(out, candidates[i+1:]...)
		}
	}
	return candidates
}

// Error is a refusal before any upstream: the HTTP status and message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Via says how a decision was made.
type Via string

const (
	ViaOverride Via = "override"
	ViaSticky   Via = "sticky"
	ViaWeighted Via = "weighted"
)

// Request is what the policy may look at.
type Request struct {
	StickyKey string // "" = none
	Override  string // "" = none
}

// Candidates are the targets that take split traffic: routable with a positive weight.
func Candidates(targets []*Target) []*Target {
	out := make([]*Target, 0, len(targets))
	for _, t := range targets {
		if t.Weight > 0 && t.Routable {
			out = append(out, t)
		}
	}
	return out
}

// Decide returns the variants to try in order: the override alone, else the sticky ranking, else a
// weighted draw (draw in [0, 1)) followed by the others as fallbacks.
func Decide(targets []*Target, req Request, draw float64) ([]*Target, Via, error) {
	if req.Override != "" {
		for _, t := range targets {
			if t.Name == req.Override {
				if !t.Routable {
					return nil, ViaOverride, &Error{503, fmt.Sprintf("variant %q has no ready endpoint", req.Override)}
				}
				// An explicit choice must not silently be served by another variant.
				return []*Target{t}, ViaOverride, nil
			}
		}
		return nil, ViaOverride, &Error{400, fmt.Sprintf("unknown variant %q", req.Override)}
	}
	candidates := Candidates(targets)
	if len(candidates) == 0 {
		return nil, "", &Error{503, "no variant with a ready endpoint and a positive weight"}
	}
	if req.StickyKey != "" {
		return RendezvousOrder(candidates, req.StickyKey), ViaSticky, nil
	}
	return WeightedOrder(candidates, draw), ViaWeighted, nil
}
