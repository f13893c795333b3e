package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

type vectors struct {
	KeyHashes map[string]string `json:"keyHashes"`
	Splits    []struct {
		Weights map[string]int    `json:"weights"`
		Orders  map[string]string `json:"orders"`
	} `json:"splits"`
	Weighted []struct {
		Draw  float64 `json:"draw"`
		Order string  `json:"order"`
	} `json:"weighted"`
}

func load(t *testing.T) vectors {
	t.Helper()
	data, err := os.ReadFile("testdata/rendezvous_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func targets(weights map[string]int, order ...string) []*Target {
	out := make([]*Target, 0, len(order))
	for _, name := range order {
		out = append(out, NewTarget(name, weights[name], true))
	}
	return out
}

func names(ts []*Target) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.Name
	}
	return strings.Join(parts, ",")
}

// The Python router's own answers: a user keeps their variant across the upgrade.
func TestRendezvousMatchesThePythonRouter(t *testing.T) {
	v := load(t)
	for key, want := range v.KeyHashes {
		if got := fmt.Sprintf("%016x", KeyHash(key)); got != want {
			t.Errorf("KeyHash(%q) = %s, want %s", key, got, want)
		}
	}
	checked := 0
	for _, split := range v.Splits {
		for key, want := range split.Orders {
			// The candidates' input order must not matter: use the Python order reversed.
			order := strings.Split(want, ",")
			reversed := make([]string, len(order))
			for i, n := range order {
				reversed[len(order)-1-i] = n
			}
			if got := names(RendezvousOrder(targets(split.Weights, reversed...), key)); got != want {
				t.Errorf("%v %q: got %s, want %s", split.Weights, key, got, want)
			}
			checked++
		}
	}
	if checked < 5000 {
		t.Fatalf("only %d vectors", checked)
	}
	w := map[string]int{"a": 60, "b": 25, "c": 15}
	for _, c := range v.Weighted {
		if got := names(WeightedOrder(targets(w, "a", "b", "c"), c.Draw)); got != c.Order {
			t.Errorf("draw %v: got %s, want %s", c.Draw, got, c.Order)
		}
	}
}

var users = func() []string {
	out := make([]string, 10000)
	for i := range out {
		out[i] = fmt.Sprintf("user-%d", i)
	}
	return out
}()

func assign(ts []*Target) map[string]string {
	out := make(map[string]string, len(users))
	for _, u := range users {
		order, _, err := Decide(ts, Request{StickyKey: u}, 0)
		if err != nil {
			panic(err)
		}
		out[u] = order[0].Name
	}
	return out
}

func split(weights map[string]int, ready map[string]bool) []*Target {
	var ts []*Target
	for _, name := range []string{"a", "b", "c"} {
		if w, ok := weights[name]; ok {
			r, set := ready[name]
			ts = append(ts, NewTarget(name, w, !set || r))
		}
	}
	return ts
}

func TestSplitMatchesWeightsWithin3Percent(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	for _, weights := range []map[string]int{
		{"a": 70, "b": 30}, {"a": 50, "b": 50}, {"a": 10, "b": 90}, {"a": 60, "b": 25, "c": 15},
	} {
		for _, sticky := range []bool{true, false} {
			counts := map[string]int{}
			ts := split(weights, nil)
			for _, u := range users {
				req := Request{}
				if sticky {
					req.StickyKey = u
				}
				order, _, err := Decide(ts, req, rng.Float64())
				if err != nil {
					t.Fatal(err)
				}
				counts[order[0].Name]++
			}
			for name, w := range weights {
				share := float64(counts[name]) / float64(len(users))
				if math.Abs(share-float64(w)/100) > 0.03 {
					t.Errorf("%v sticky=%v: %s got %.3f", weights, sticky, name, share)
				}
			}
		}
	}
}

func TestWeightChangeMovesOnlyUsersThatMust(t *testing.T) {
	before := assign(split(map[string]int{"a": 70, "b": 30}, nil))
	after := assign(split(map[string]int{"a": 50, "b": 50}, nil))
	moved := 0
	for _, u := range users {
		if before[u] != after[u] {
			moved++
			if before[u] != "a" || after[u] != "b" {
				t.Fatalf("%s moved %s -> %s", u, before[u], after[u])
			}
		}
	}
	if share := float64(moved) / float64(len(users)); math.Abs(share-0.20) > 0.03 {
		t.Fatalf("moved %.3f of users, want about 0.20", share)
	}
}

func TestRemovingAVariantMovesOnlyItsUsers(t *testing.T) {
	weights := map[string]int{"a": 50, "b": 30, "c": 20}
	before := assign(split(weights, nil))
	after := assign(split(weights, map[string]bool{"c": false}))
	took := map[string]bool{}
	for _, u := range users {
		if before[u] != "c" && before[u] != after[u] {
			t.Fatalf("%s moved %s -> %s", u, before[u], after[u])
		}
		if before[u] == "c" {
			took[after[u]] = true
		}
	}
	if !took["a"] || !took["b"] || len(took) != 2 {
		t.Fatalf("c's users went to %v", took)
	}
}

func TestFallbackOrderListsEveryCandidateOnce(t *testing.T) {
	ts := split(map[string]int{"a": 60, "b": 30, "c": 10}, nil)
	for _, key := range []string{"u1", ""} {
		order, _, err := Decide(ts, Request{StickyKey: key}, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, o := range order {
			seen[o.Name]++
		}
		if len(order) != 3 || seen["a"] != 1 || seen["b"] != 1 || seen["c"] != 1 {
			t.Fatalf("order %s", names(order))
		}
	}
}

func TestOverride(t *testing.T) {
	cases := []struct {
		override string
		ready    bool
		want     string
		status   int
	}{
		{"b", true, "b", 0},
		{"zero", true, "zero", 0},
		{"b", false, "", 503},
		{"nope", true, "", 400},
	}
	for _, c := range cases {
		ts := []*Target{NewTarget("a", 100, true), NewTarget("b", 0, c.ready), NewTarget("zero", 0, true)}
		order, via, err := Decide(ts, Request{StickyKey: "u", Override: c.override}, 0)
		if c.status != 0 {
			if e, ok := err.(*Error); !ok || e.Status != c.status {
				t.Errorf("%+v: got %v", c, err)
			}
			continue
		}
		if err != nil || via != ViaOverride || names(order) != c.want {
			t.Errorf("%+v: got %s %s %v", c, names(order), via, err)
		}
	}
}

func TestNoRoutableVariantIsA503(t *testing.T) {
	ts := []*Target{NewTarget("a", 100, false), NewTarget("b", 0, true)}
	if _, _, err := Decide(ts, Request{}, 0); err == nil || err.(*Error).Status != 503 {
		t.Fatalf("got %v", err)
	}
}
