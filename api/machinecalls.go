package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// The machine API's calls, one method per call. Each names the callee by
// machine ID; a refusal is a *StatusError inside a *CallError.

// Reserve asks machineID to promise a subnet to a joining machine.
func (c *MachineClient) Reserve(ctx context.Context, machineID string, req ReserveRequest) error {
	return c.call(ctx, c.HTTP, "Reserve", machineID, http.MethodPost, MachinePathReserve, req, nil)
}

// UpdateSelf asks machineID to change its own record (only a machine
// writes its record) and returns the record it wrote.
func (c *MachineClient) UpdateSelf(ctx context.Context, machineID string, u MachineUpdate) (*record.Machine, error) {
	var m record.Machine
	if err := c.call(ctx, c.HTTP, "UpdateSelf", machineID, http.MethodPost, MachinePathSelf, u, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Keyring reads machineID's gossip keyring.
func (c *MachineClient) Keyring(ctx context.Context, machineID string) (GossipKeyring, error) {
	var k GossipKeyring
	err := c.call(ctx, c.HTTP, "Keyring", machineID, http.MethodGet, MachinePathKeyring, nil, &k)
	return k, err
}

// PushKeyring hands machineID a new gossip keyring.
func (c *MachineClient) PushKeyring(ctx context.Context, machineID string, k GossipKeyring) error {
	return c.call(ctx, c.HTTP, "PushKeyring", machineID, http.MethodPost, MachinePathKeyring, k, nil)
}

// RuntimeReady says whether machineID can run containers now.
func (c *MachineClient) RuntimeReady(ctx context.Context, machineID string) error {
	return c.call(ctx, c.HTTP, "RuntimeReady", machineID, http.MethodGet, MachinePathRuntimeReady, nil, nil)
}

// RuntimeCapacity is what machineID's Docker reports of its CPUs,
// memory and architecture (zeros from an older agent).
func (c *MachineClient) RuntimeCapacity(ctx context.Context, machineID string) (RuntimeCapacity, error) {
	var into RuntimeCapacity
	err := c.call(ctx, c.HTTP, "RuntimeCapacity", machineID, http.MethodGet, MachinePathRuntimeReady, nil, &into)
	return into, err
}

// CreateContainer makes a container on machineID from spec and returns
// its record as that machine wrote it.
func (c *MachineClient) CreateContainer(ctx context.Context, machineID string, spec runtime.ContainerSpec) (*record.Container, error) {
	var created record.Container
	if err := c.call(ctx, c.Long, "CreateContainer", machineID, http.MethodPost, MachinePathRuntimeContainers, spec, &created); err != nil {
		return nil, err
	}
	return &created, nil
}

// InspectContainer reads a container's state on machineID from Docker
// there, as its record.
func (c *MachineClient) InspectContainer(ctx context.Context, machineID, id string) (*record.Container, error) {
	var into record.Container
	if err := c.call(ctx, c.HTTP, "InspectContainer", machineID, http.MethodGet, under(MachinePathRuntimeContainers, id), nil, &into); err != nil {
		return nil, err
	}
	return &into, nil
}

// ContainerAction stops, starts, drains or removes a container on
// machineID. An agent older than drain answers it with ErrBadRequest.
func (c *MachineClient) ContainerAction(ctx context.Context, machineID, id, action string) error {
	method, path := http.MethodPost, under(MachinePathRuntimeContainers, id, action)
	if action == "remove" {
		method, path = http.MethodDelete, under(MachinePathRuntimeContainers, id)
	}
	return c.call(ctx, c.Long, "ContainerAction "+action, machineID, method, path, nil, nil)
}

// ExecContainer runs cmd in a container on machineID.
func (c *MachineClient) ExecContainer(ctx context.Context, machineID, id string, cmd []string) (ContainerExecResult, error) {
	var res ContainerExecResult
	err := c.call(ctx, c.Long, "ExecContainer", machineID, http.MethodPost, under(MachinePathRuntimeContainers, id, "exec"),
		ContainerExecRequest{Cmd: cmd}, &res)
	return res, err
}

// ContainerLogs hands line each of a container's log lines on machineID
// (Docker's timestamp first). An error from line comes back as is; a read
// that fails because ctx ended is the normal end of a follow.
func (c *MachineClient) ContainerLogs(ctx context.Context, machineID, id string, o LogsRequest, line func(string) error) error {
	q := url.Values{"follow": {strconv.FormatBool(o.Follow)}}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Tail != "" {
		q.Set("tail", o.Tail)
	}
	if o.Until != "" {
		q.Set("until", o.Until)
	}
	resp, err := c.send(ctx, c.HTTP, "ContainerLogs", machineID, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+under(MachinePathRuntimeContainers, id, "logs")+"?"+q.Encode(), nil)
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 2<<20)
	for sc.Scan() {
		if err := line(sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return &CallError{Call: "ContainerLogs", Target: "machine " + machineID, Err: err}
	}
	return nil
}

// ImageID is machineID's ID for an image reference; a missing image is a
// *StatusError that errors.Is(err, ErrNotFound).
func (c *MachineClient) ImageID(ctx context.Context, machineID, ref string) (string, error) {
	var a ImageIDAnswer
	err := c.call(ctx, c.HTTP, "ImageID", machineID, http.MethodGet, MachinePathRuntimeImage+"?ref="+url.QueryEscape(ref), nil, &a)
	return a.ID, err
}

// LoadImage streams a docker save tarball to machineID, which loads it,
// and returns what it loaded.
func (c *MachineClient) LoadImage(ctx context.Context, machineID string, tarball io.Reader, load ImageLoad) (string, error) {
	q := url.Values{"ref": {load.Ref}, "id": {load.ID}}
	if load.Force {
		q.Set("force", "1")
	}
	resp, err := c.send(ctx, c.Long, "LoadImage", machineID, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+MachinePathRuntimeImages+"?"+q.Encode(), tarball)
		if err == nil {
			req.Header.Set("Content-Type", "application/x-tar")
		}
		return req, err
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	// The answer's name is informational: a load that answered 2xx worked.
	var a ImageLoadAnswer
	_ = json.NewDecoder(io.LimitReader(resp.Body, maxMachineAnswer)).Decode(&a)
	return a.Loaded, nil
}
