package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ErrNotFound is what a Backend returns for a missing key; it becomes 404.
var ErrNotFound = errors.New("not found")

// ErrBadRequest marks errors caused by the caller's input; it becomes 400.
var ErrBadRequest = errors.New("bad request")

// ErrConflict marks a request that clashes with the state (a name that
// is taken); it becomes 409.
var ErrConflict = errors.New("conflict")

// ErrUnavailable marks a request that needs a machine that cannot be
// reached now; it becomes 503.
var ErrUnavailable = errors.New("unavailable")

// StatusError is a non-2xx answer: the other side understood the call and
// said no. Message is the other side's own words (the local API's
// {"error": …}, or the machine API's plain text), kept apart so a caller
// can pass them on unchanged.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return e.Message
}

// Is lets callers test an answer against the sentinels the server mapped
// to statuses, e.g. errors.Is(err, api.ErrNotFound), the same on both
// sides of the wire.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrBadRequest:
		return e.Status == http.StatusBadRequest
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	}
	return false
}

// CallError says which call failed against which agent (a socket, an
// ssh:// target, or a machine ID); Err is a *StatusError when the other
// side answered, a transport error when it did not.
type CallError struct {
	Call   string
	Target string
	Err    error
}

// Error is what a user reads. When the agent answered, its message was
// written for them: the local agent's stands alone, another machine's is
// prefixed with that machine. When it did not answer, the call and the
// target say what could not be reached.
func (e *CallError) Error() string {
	var answered *StatusError
	if errors.As(e.Err, &answered) {
		if strings.HasPrefix(e.Target, "machine ") {
			return fmt.Sprintf("%s: %v", e.Target, e.Err)
		}
		return e.Err.Error()
	}
	return fmt.Sprintf("%s on %s: %v", e.Call, e.Target, e.Err)
}

func (e *CallError) Unwrap() error { return e.Err }

// apiError is the body of every non-2xx answer of the local API.
type apiError struct {
	Error string `json:"error"`
}

// answerError turns a non-2xx answer into a *StatusError carrying the
// other side's message: {"error": …} (local API) or plain text (machine
// API, http.Error).
func answerError(resp *http.Response) error {
	if resp.StatusCode/100 == 2 {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e apiError
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &StatusError{Status: resp.StatusCode, Message: e.Error}
	}
	return &StatusError{Status: resp.StatusCode, Message: string(bytes.TrimSpace(body))}
}
