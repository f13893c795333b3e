package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"kubetune.io/router/internal/config"
)

func TestForwardable(t *testing.T) {
	for p, want := range map[string]bool{
		"/v1": true, "/v1/": true, "/v1/chat/completions": true, "/v1/models/": true,
		"/": false, "/v1x": false, "/v1/../admin": false, "/v1/./models": false, "/v1//models": false,
		"/v1/models/..": false, "/health": false, "/metrics": false,
		"/v1/load_lora_adapter": false, "/v1/unload_lora_adapter": false, "/v1/load_lora_adapter/": false,
	} {
		if got := forwardable(p); got != want {
			t.Errorf("forwardable(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestPushedConfig(t *testing.T) {
	doc := func(revision int64, weight int) string {
		return fmt.Sprintf(`{"revision":%d,"variants":[{"name":"a","weight":%d,"endpoints":["http://a:8000"]}]}`, revision, weight)
	}
	initial, err := config.Parse([]byte(doc(10, 100)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		tokenRequired bool
		sent          string // the token header; "" sends none
		body          string
		status        int
		revision      int64 // served afterwards
		weight        int
	}{
		{"newer config installed", true, "secret", doc(11, 40), 200, 11, 40},
		{"same revision installed", true, "secret", doc(10, 30), 200, 10, 30},
		{"older config kept out", true, "secret", doc(9, 0), 200, 10, 100},
		{"no token sent", true, "", doc(11, 40), 403, 10, 100},
		{"wrong token", true, "guess", doc(11, 40), 403, 10, 100},
		{"router without a token file refuses pushes", false, "secret", doc(11, 40), 403, 10, 100},
		{"invalid config", true, "secret", `{"revision":11,"variants":[]}`, 400, 10, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			metrics := NewMetrics("md")
			state := NewState(initial, metrics)
			h := NewHandler(state, metrics, Options{TokenRequired: tc.tokenRequired})
			h.SetToken([]byte("secret\n"))
			r := httptest.NewRequest(http.MethodPut, "/kubetune/config", strings.NewReader(tc.body))
			if tc.sent != "" {
				r.Header.Set(TokenHeader, tc.sent)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if got := state.Config(); got.Revision != tc.revision || got.Variants[0].Weight != tc.weight {
				t.Fatalf("serving revision %d weight %d, want %d and %d", got.Revision, got.Variants[0].Weight, tc.revision, tc.weight)
			}
			if tc.status == 200 {
				var answer struct {
					Installed bool  `json:"installed"`
					Revision  int64 `json:"revision"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
					t.Fatal(err)
				}
				if answer.Revision != tc.revision || answer.Installed != (tc.revision == mustRevision(t, tc.body)) {
					t.Fatalf("answer %+v", answer)
				}
			}
		})
	}
}

func mustRevision(t *testing.T, body string) int64 {
	t.Helper()
	cfg, err := config.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Revision
}
