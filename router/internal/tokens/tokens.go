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
	if !bytes.Contains(body, usageKey) {
		return 0, false
	}
	return usageTokens(body)
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
