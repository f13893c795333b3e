package config

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDefaultsMatchTheModel(t *testing.T) {
	cfg, err := Parse([]byte(`{"variants":[{"name":"a","weight":100,"endpoints":["http://a:8000/"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(cfg)
	want := `{"variants":[{"name":"a","weight":100,"endpoints":["http://a:8000"],"ready":true}],"revision":0,` +
		`"stickyHeader":"x-user-id","overrideHeader":"x-kubetune-variant","syntheticHeader":"x-kubetune-synthetic",` +
		`"maxBodyBytes":8388608,"maxAttempts":3,"endpointCooldownS":5,"timeouts":{"connectS":5,"readS":300}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestNullStickyHeaderMeansRandom(t *testing.T) {
	cfg, err := Parse([]byte(`{"variants":[{"name":"a","weight":1}],"stickyHeader":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StickyHeader != nil {
		t.Fatalf("sticky header %q, want none", *cfg.StickyHeader)
	}
}

func TestInvalidDocumentsAreRejected(t *testing.T) {
	for _, doc := range []string{
		`{"variants":[]}`,
		`{"variants":[{"name":"a","weight":101}]}`,
		`{"variants":[{"name":"a","weight":50},{"name":"a","weight":50}]}`,
		`{"variants":[{"name":"a","weight":1,"endpoints":["ftp://x"]}]}`,
		`{"variants":[{"name":"a","weight":1}],"stickyHeader":"bad header"}`,
		`{"variants":[{"name":"a","weight":1}],"typo":1}`,
		`{"variants":[{"name":"a","weight":1}],"MaxAttempts":2}`,
		`{"variants":[{"name":"a","weight":1}],"max_attempts":2}`,
		`{"variants":[{"name":"a","weight":"1"}]}`,
		`{"variants":[{"name":"a","weight":1.0}]}`,
		`[1, 2]`,
		`not json`,
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("accepted %s", doc)
		} else if !strings.Contains(err.Error(), "router config") {
			t.Errorf("%s: unexpected error %v", doc, err)
		}
	}
}
