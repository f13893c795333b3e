package proxy

import "testing"

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
