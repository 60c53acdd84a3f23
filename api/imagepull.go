package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Pulls over the machine API: the machine that got a command asks one
// target to resolve the image's tag to a pin, then every target to pull
// that pin through its own Docker. Credentials ride in the body (mutual
// TLS) and are used for that call only.

// ImageResolveRequest asks a machine what ref is now.
type ImageResolveRequest struct {
	Ref    string `json:"ref"`
	Policy string `json:"policy,omitempty"` // missing, always, never
	// RegistryFirst asks the registry even when the machine has ref.
	RegistryFirst bool          `json:"registry_first,omitempty"`
	Auth          *RegistryAuth `json:"auth,omitempty"`
}

// ImageResolveAnswer is what ref resolved to.
type ImageResolveAnswer struct {
	Pin     string `json:"pin"`
	Digest  string `json:"digest,omitempty"`
	From    string `json:"from,omitempty"`
	Warning string `json:"warning,omitempty"`
}

// ImagePullRequest asks a machine to have the image pinned as Pin.
type ImagePullRequest struct {
	Pin    string        `json:"pin"`
	Image  string        `json:"image"` // the name the user gave, for progress lines
	Policy string        `json:"policy,omitempty"`
	Auth   *RegistryAuth `json:"auth,omitempty"`
}

// maxProgressLine bounds one line of a streamed pull answer.
const maxProgressLine = 64 << 10

// ResolveImage asks machineID to resolve an image reference.
func (c *MachineClient) ResolveImage(ctx context.Context, machineID string, req ImageResolveRequest) (ImageResolveAnswer, error) {
	var a ImageResolveAnswer
	err := c.call(ctx, c.Long, "ResolveImage", machineID, http.MethodPost, MachinePathImageResolve, req, &a)
	return a, err
}

// PullImage asks machineID to pull an image, calling progress with each
// line of its progress. The last line says done or present; a failed pull
// is an error with the machine's words.
func (c *MachineClient) PullImage(ctx context.Context, machineID string, req ImagePullRequest, progress func(ImageProgress)) (ImageProgress, error) {
	resp, err := c.send(ctx, c.Long, "PullImage", machineID, func(base string) (*http.Request, error) {
		return NewJSONRequest(ctx, http.MethodPost, base+MachinePathImagePull, req)
	})
	if err != nil {
		return ImageProgress{}, err
	}
	defer resp.Body.Close()
	fail := func(err error) error { return &CallError{Call: "PullImage", Target: "machine " + machineID, Err: err} }
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4<<10), maxProgressLine)
	var last ImageProgress
	for sc.Scan() {
		var line struct {
			ImageProgress
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return last, fail(fmt.Errorf("decode a line of the answer: %w", err))
		}
		if line.Status == "" && line.Error != "" { // the stream's own failure
			return last, &StatusError{Status: http.StatusInternalServerError, Message: line.Error}
		}
		last = line.ImageProgress
		last.Error = line.Error
		if progress != nil {
			progress(last)
		}
		if last.Status == "failed" {
			return last, &StatusError{Status: http.StatusBadGateway, Message: last.Error}
		}
		if last.Final() {
			return last, nil
		}
	}
	if err := sc.Err(); err != nil {
		return last, fail(err)
	}
	return last, fail(errors.New("the answer ended before the pull did"))
}
