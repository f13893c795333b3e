package tokens

import "testing"

func sse(events ...string) string {
	out := ""
	for _, e := range events {
		out += "data: " + e + "\n\n"
	}
	return out
}

func TestSSECounterHandlesAnyChunking(t *testing.T) {
	cases := []struct {
		stream     string
		splitEvery int
		tokens     int64
	}{
		{sse(`{"choices":[{"delta":{"content":"a"}}]}`, `{"choices":[{"delta":{"content":"b"}}]}`, "[DONE]"), 7, 2},
		{sse(`{"choices":[{"delta":{"content":"a"}}]}`, `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}`, "[DONE]"), 5, 9},
		{": keep-alive\n\n" + sse(`{"choices":[{"text":"x"}]}`), 1, 1},
		{"data: {\"choices\":[{\"text\":\"x\"}]}\r\n\r\ndata: [DONE]\r\n\r\n", 3, 1},
		{`data: {"choices":[{"text":"x"}]}`, 1000, 1},
		{sse(`{"choices": [ ]}`), 4, 0},
	}
	for _, c := range cases {
		var counter SSECounter
		for start := 0; start < len(c.stream); start += c.splitEvery {
			end := min(start+c.splitEvery, len(c.stream))
			counter.Feed([]byte(c.stream[start:end]))
		}
		if got := counter.Tokens(); got != c.tokens {
			t.Errorf("%q split %d: %d tokens, want %d", c.stream, c.splitEvery, got, c.tokens)
		}
	}
}

func TestOfBody(t *testing.T) {
	cases := []struct {
		body   string
		tokens int64
		ok     bool
	}{
		{`{"usage":{"completion_tokens":7}}`, 7, true},
		{`{"choices":[]}`, 0, false},
		{`{"usage":{"completion_tokens":"x"}}`, 0, false},
		{`{"usage":{"completion_tokens":7.5}}`, 0, false},
		{`{"usage":{"completion_tokens":-1}}`, 0, false},
		{`{"usage": broken`, 0, false},
		{`{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":7,"prompt_tokens_details":null}}`, 7, true},
		{`{"usage":{"completion_tokens":7,"details":{"x":1}}}`, 7, true},
		{`{"usage":{"completion_tokens":"7"}}`, 0, false},
		{`{"usage":{"completion_tokens":7e2}}`, 0, false},
		{`{"usage":{"prompt_tokens":3}}`, 0, false},
		{`{"usage":null}`, 0, false},
	}
	for _, c := range cases {
		if n, ok := OfBody([]byte(c.body)); n != c.tokens || ok != c.ok {
			t.Errorf("%s: got %d %v", c.body, n, ok)
		}
	}
}
