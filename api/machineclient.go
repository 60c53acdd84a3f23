package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// MachineClient makes machine API calls to other machines: one method per
// call (machinecalls.go), the callee named by machine ID.
type MachineClient struct {
	// HTTP is for quick calls: it gives up when an answer does not start
	// within the transport's answer timeout.
	HTTP *http.Client
	// Long has no answer timeout, for calls that wait on Docker (a create
	// or a stop on a busy machine, loading a large image); the caller's
	// context bounds them.
	Long *http.Client
	// BaseURL maps a machine ID to its machine API (https://addr:port).
	BaseURL func(machineID string) (string, error)
	// ExecTiming keeps exec streams alive (zero: the defaults).
	ExecTiming ExecTiming
}

// NewMachineClient wraps a machine HTTP client (NewMachineHTTP); the long
// client shares its settings but not its connections or answer timeout.
func NewMachineClient(h *http.Client, baseURL func(machineID string) (string, error)) *MachineClient {
	long := h
	if tr, ok := h.Transport.(*http.Transport); ok {
		tr = tr.Clone()
		tr.ResponseHeaderTimeout = 0
		long = &http.Client{Transport: tr}
	}
	return &MachineClient{HTTP: h, Long: long, BaseURL: baseURL}
}

// maxMachineAnswer bounds a JSON answer read from another machine.
const maxMachineAnswer = 1 << 20

// send makes one request to machineID and returns the answer when it is
// 2xx; otherwise the error names the call and the machine. The caller
// closes the body.
func (c *MachineClient) send(ctx context.Context, h *http.Client, name, machineID string,
	newReq func(base string) (*http.Request, error)) (*http.Response, error) {
	fail := func(err error) error { return &CallError{Call: name, Target: "machine " + machineID, Err: err} }
	base, err := c.BaseURL(machineID)
	if err != nil {
		return nil, fail(err)
	}
	req, err := newReq(base)
	if err != nil {
		return nil, fail(err)
	}
	resp, err := h.Do(req)
	if err != nil {
		return nil, fail(err)
	}
	if err := answerError(resp); err != nil {
		resp.Body.Close()
		return nil, fail(err)
	}
	return resp, nil
}

// call is one JSON call to machineID; out (if not nil) takes the answer.
func (c *MachineClient) call(ctx context.Context, h *http.Client, name, machineID, method, path string, in, out any) error {
	resp, err := c.send(ctx, h, name, machineID, func(base string) (*http.Request, error) {
		return NewJSONRequest(ctx, method, base+path, in)
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxMachineAnswer)).Decode(out); err != nil {
		return &CallError{Call: name, Target: "machine " + machineID, Err: fmt.Errorf("decode the answer: %w", err)}
	}
	return nil
}
