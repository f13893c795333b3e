package proxy

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestRewriteModel(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"model":"base","x":1}`, `{"model":"lora","x":1}`},
		{`{"x":1}`, `{"model":"lora","x":1}`},
		{`{ }`, `{"model":"lora" }`},
		{`{"model":"lora"}`, `{"model":"lora"}`},
		{` {"messages":[{"model":"inner"}], "model" : null}`, ` {"messages":[{"model":"inner"}], "model" : "lora"}`},
		{`{"model":"a\u00e9","stream":true}`, `{"model":"lora","stream":true}`},
	}
	for _, c := range cases {
		got := RewriteModel([]byte(c.body), "lora")
		if string(got) != c.want {
			t.Errorf("%s: got %s, want %s", c.body, got, c.want)
		}
		var a, b any
		if json.Unmarshal(got, &a) != nil || json.Unmarshal([]byte(c.want), &b) != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("%s: not the expected JSON", c.body)
		}
	}
}

func TestRewriteModelLeavesNonObjectsAlone(t *testing.T) {
	for _, body := range []string{"not json", "[1,2]", `{"model":"x"`, `"s"`, ""} {
		if got := RewriteModel([]byte(body), "lora"); string(got) != body {
			t.Errorf("%q became %q", body, got)
		}
	}
}
