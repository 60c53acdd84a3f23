package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// PullFrom asks machineID to pull an image staged on another machine
// (ImagePullFrom) and hands progress each line it reports. A final
// "failed" line is returned as an error (a *StatusError with the callee's
// words), as is a stream that ends without a final line.
func (c *MachineClient) PullFrom(ctx context.Context, machineID string, req ImagePullFrom, progress func(ImageProgress)) error {
	resp, err := c.send(ctx, c.Long, "PullFrom", machineID, func(base string) (*http.Request, error) {
		return NewJSONRequest(ctx, http.MethodPost, base+MachinePathImagePullFrom, req)
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var p ImageProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return &CallError{Call: "PullFrom", Target: "machine " + machineID, Err: fmt.Errorf("decode a line: %w", err)}
		}
		if p.Status == "failed" {
			return &CallError{Call: "PullFrom", Target: "machine " + machineID, Err: &StatusError{Status: http.StatusInternalServerError, Message: p.Error}}
		}
		progress(p)
		if p.Final() {
			return nil
		}
	}
	err = sc.Err()
	if err == nil {
		err = errors.New("the answer ended before the pull did")
	}
	return &CallError{Call: "PullFrom", Target: "machine " + machineID, Err: err}
}

// RegistryBlob reads a blob of machineID's registry store; the caller
// checks its digest and closes it.
func (c *MachineClient) RegistryBlob(ctx context.Context, machineID, digest string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, c.Long, "RegistryBlob", machineID, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+MachinePathRegistryBlobs+"/"+url.PathEscape(digest), nil)
	})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
