package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// The local API client's plumbing. Every typed call (localcalls.go,
// servicecalls.go) goes through call or stream, so every failure names
// the call and the agent it was made against.

// call is one request/answer call, wrapped as a *CallError on failure.
func (c *Client) call(ctx context.Context, name, method, path string, in, out any) error {
	if err := c.Do(ctx, method, path, in, out); err != nil {
		return &CallError{Call: name, Target: c.Target, Err: err}
	}
	return nil
}

// stream is one NDJSON call: each line is decoded into a T and handed to
// line. An error from line itself ends the call and comes back as is: it
// is the caller's, not the agent's.
func stream[T any](ctx context.Context, c *Client, name, method, path string, in any, line func(T) error) error {
	var own error
	err := c.Stream(ctx, method, path, in, func(raw json.RawMessage) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode a line of the answer: %w", err)
		}
		own = line(v)
		return own
	})
	if err == nil || (own != nil && err == own) {
		return err
	}
	return &CallError{Call: name, Target: c.Target, Err: err}
}

// Get calls the local API and decodes the JSON answer into out. It and
// Do are the untyped escape hatch for tools (bench); commands use the
// typed calls.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Do calls the local API with an optional JSON body and decodes the JSON
// answer into out (if not nil). A refusal is a *StatusError.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode agent answer to %s: %w", path, err)
	}
	return nil
}

// Stream calls a long local API call that answers with JSON lines
// (streamLines) and hands each line to line. A last line {"error": …}
// becomes a *StatusError with the answer's status.
func (c *Client) Stream(ctx context.Context, method, path string, in any, line func(json.RawMessage) error) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 2<<20)
	for sc.Scan() {
		// The end is a line with an error and nothing else: a progress
		// line may carry an "error" of its own (ImageProgress's, for one
		// machine) and is handed on.
		var e map[string]json.RawMessage
		if json.Unmarshal(sc.Bytes(), &e) == nil && len(e) == 1 && e["error"] != nil {
			var msg string
			json.Unmarshal(e["error"], &msg)
			return &StatusError{Status: resp.StatusCode, Message: msg}
		}
		if err := line(json.RawMessage(sc.Bytes())); err != nil {
			return err
		}
	}
	return sc.Err()
}

// NewJSONRequest is a request with in as its JSON body (none when in is
// nil), for the local API and the machine API alike.
func NewJSONRequest(ctx context.Context, method, url string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, url, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// send makes one call and returns an answer that is not a refusal, whose
// body the caller closes; a refusal is a *StatusError.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	req, err := NewJSONRequest(ctx, method, c.BaseURL+path, in)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	if err := answerError(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}
