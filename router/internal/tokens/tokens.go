// Package tokens counts output tokens in OpenAI responses: the usage field when present, else one per SSE
// event that carries choices (what vLLM emits per decoding step).
package tokens

import (
	"bytes"
	"encoding/json"
	"strconv"
)

var (
	usageKey    = []byte(`"usage"`)
	choicesKey  = []byte(`"choices"`)
	noChoices   = []byte(`"choices":[]`)
	dataPrefix  = []byte("data:")
	doneMarker  = []byte("[DONE]")
	spaceRemove = []byte(" ")
)

type usageDoc struct {
	Usage map[string]json.RawMessage `json:"usage"`
}

// usageTokens reads usage.completion_tokens of a JSON object: a non-negative integer, else ok=false.
func usageTokens(doc []byte) (int64, bool) {
	var d usageDoc
	if err := json.Unmarshal(doc, &d); err != nil || d.Usage == nil {
		return 0, false
	}
	raw, found := d.Usage["completion_tokens"]
	if !found {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// OfBody is the token count a non-streaming response reports; ok=false when it says nothing usable.
func OfBody(body []byte) (int64, bool) {
	i := bytes.LastIndex(body, usageKey)
	if i < 0 {
		return 0, false
	}
	if n, ok := flatUsage(body, i+len(usageKey)); ok {
		return n, true
	}
	return usageTokens(body)
}

var completionKey = []byte(`"completion_tokens"`)

// flatUsage reads `"usage": {..., "completion_tokens": N, ...}` starting after the "usage" key without
// decoding the whole body: the common shape (usage last, its values plain numbers). Anything else
// (nested objects, strings, a usage key that is not followed by an object) leaves it to the decoder.
func flatUsage(body []byte, at int) (int64, bool) {
	rest := bytes.TrimLeft(body[at:], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return 0, false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) == 0 || rest[0] != '{' {
		return 0, false
	}
	end := bytes.IndexByte(rest, '}')
	if end < 0 || !onlyKeys(rest[1:end]) {
		return 0, false
	}
	object := rest[1:end]
	k := bytes.Index(object, completionKey)
	if k < 0 {
		return 0, false
	}
	value := bytes.TrimLeft(object[k+len(completionKey):], " \t\r\n")
	if len(value) == 0 || value[0] != ':' {
		return 0, false
	}
	value = bytes.TrimLeft(value[1:], " \t\r\n")
	digits := 0
	for digits < len(value) && value[digits] >= '0' && value[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		return 0, false
	}
	after := bytes.TrimLeft(value[digits:], " \t\r\n")
	if len(after) > 0 && after[0] != ',' {
		return 0, false // 7.5, 7e2: not an integer, the decoder decides
	}
	n, err := strconv.ParseInt(string(value[:digits]), 10, 64)
	return n, err == nil
}

// onlyKeys: the quotes in a flat object are those of its keys (no string values, no escapes, no nesting).
func onlyKeys(object []byte) bool {
	if bytes.ContainsAny(object, "{[\\") {
		return false
	}
	for _, field := range bytes.Split(object, []byte(",")) {
		field = bytes.TrimSpace(field)
		if len(field) == 0 || field[0] != '"' {
			return false
		}
		closing := bytes.IndexByte(field[1:], '"')
		if closing < 0 || bytes.IndexByte(field[closing+2:], '"') >= 0 {
			return false
		}
	}
	return true
}

// SSECounter counts tokens of an event stream fed in arbitrary chunks.
type SSECounter struct {
	tail     []byte
	chunks   int64
	usage    int64
	hasUsage bool
	scratch  []byte
}

// Feed takes the next chunk of the stream as it arrived.
func (c *SSECounter) Feed(chunk []byte) {
	for {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			c.tail = append(c.tail, chunk...)
			return
		}
		line := chunk[:i]
		if len(c.tail) > 0 {
			c.tail = append(c.tail, line...)
			line = c.tail
		}
		c.line(bytes.TrimSuffix(line, []byte("\r")))
		c.tail = c.tail[:0]
		chunk = chunk[i+1:]
	}
}

func (c *SSECounter) line(line []byte) {
	if !bytes.HasPrefix(line, dataPrefix) {
		return
	}
	payload := bytes.TrimSpace(line[len(dataPrefix):])
	if len(payload) == 0 || bytes.Equal(payload, doneMarker) {
		return
	}
	if bytes.Contains(payload, usageKey) {
		if n, ok := usageTokens(payload); ok {
			c.usage, c.hasUsage = n, true
		}
	}
	if bytes.Contains(payload, choicesKey) {
		c.scratch = append(c.scratch[:0], payload...)
		c.scratch = bytes.ReplaceAll(c.scratch, spaceRemove, nil)
		if !bytes.Contains(c.scratch, noChoices) {
			c.chunks++
		}
	}
}

// Tokens is the count so far; an unterminated last line counts too.
func (c *SSECounter) Tokens() int64 {
	if len(c.tail) > 0 {
		c.line(bytes.TrimSuffix(c.tail, []byte("\r")))
		c.tail = c.tail[:0]
	}
	if c.hasUsage {
		return c.usage
	}
	return c.chunks
}
