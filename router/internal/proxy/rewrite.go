package proxy

import (
	"bytes"
	"encoding/json"
	"io"
)

// RewriteModel sets the top-level `model` of a JSON object body to served. Only that value's bytes change
// (the rest of the body, key order included, passes through); a body that is not a JSON object, or already
// names served, is returned unchanged.
func RewriteModel(body []byte, served string) []byte {
	start := bytes.IndexFunc(body, func(r rune) bool { return r != ' ' && r != '\t' && r != '\n' && r != '\r' })
	if start < 0 || body[start] != '{' || !json.Valid(body) {
		return body
	}
	quoted, _ := json.Marshal(served)
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // '{'
		return body
	}
	type span struct{ from, to int }
	var spans []span
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return body
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return body
		}
		if key == "model" {
			end := int(dec.InputOffset())
			spans = append(spans, span{end - len(raw), end})
		}
	}
	if _, err := dec.Token(); err != nil && err != io.EOF { // '}'
		return body
	}
	if len(spans) == 0 {
		out := make([]byte, 0, len(body)+len(quoted)+10)
		out = append(out, body[:start+1]...)
		out = append(out, `"model":`...)
		out = append(out, quoted...)
		rest := bytes.TrimLeft(body[start+1:], " \t\r\n")
		if len(rest) > 0 && rest[0] != '}' {
			out = append(out, ',')
		}
		return append(out, body[start+1:]...)
	}
	last := spans[len(spans)-1]
	var current string
	if json.Unmarshal(body[last.from:last.to], &current) == nil && current == served && len(spans) == 1 {
		return body
	}
	out := make([]byte, 0, len(body)+len(quoted))
	prev := 0
	for _, s := range spans {
		out = append(out, body[prev:s.from]...)
		out = append(out, quoted...)
		prev = s.to
	}
	return append(out, body[prev:]...)
}
