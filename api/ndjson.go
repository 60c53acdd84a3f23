package api

import (
	"encoding/json"
	"net/http"
)

// streamLines runs a long call whose progress goes back as JSON lines
// (application/x-ndjson), flushed one by one. An error before the first
// line is an ordinary error answer; after it, a last line {"error": …}.
func streamLines[E any](w http.ResponseWriter, run func(emit func(E) error) error) {
	started := false
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	err := run(func(e E) error {
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			started = true
		}
		if err := enc.Encode(e); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if err != nil {
		if !started {
			reply(w, nil, err)
			return
		}
		enc.Encode(apiError{Error: err.Error()})
	}
}
