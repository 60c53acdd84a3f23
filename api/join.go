package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// JoinRefusedError is the issuer's own "no" to a join, as opposed to a
// network failure: another endpoint of the same issuer would say the same.
// Status is the HTTP status of the answer: 409 while another join with
// the same token is in progress (worth retrying), 410 once the token is
// used, revoked or expired (never worth retrying).
type JoinRefusedError struct {
	Status  int
	Message string
}

func (e *JoinRefusedError) Error() string { return "join refused: " + e.Message }

// Join makes the join call to an issuer's join port at addr (host:port)
// through h, which dials over the joiner's temporary WireGuard peer. req
// and out are the agent's join request and answer: they carry WireGuard
// keys and token members, which are the agent's and tun's types, so they
// travel here as JSON values.
func Join(ctx context.Context, h *http.Client, addr string, req, out any) error {
	r, err := NewJSONRequest(ctx, http.MethodPost, "http://"+addr+JoinPath, req)
	if err != nil {
		return err
	}
	resp, err := h.Do(r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &JoinRefusedError{Status: resp.StatusCode, Message: e.Error}
		}
		return &JoinRefusedError{Status: resp.StatusCode, Message: resp.Status}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode join answer: %w", err)
	}
	return nil
}
