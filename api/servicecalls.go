package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// The local API's calls about services, containers and images, one
// method per call, named like the ContainerBackend method that answers.

// RunService creates a service and answers when all its containers are
// placed.
func (c *Client) RunService(ctx context.Context, req RunRequest) (ServiceResult, error) {
	var res ServiceResult
	err := c.call(ctx, "RunService", http.MethodPost, PathServices, req, &res)
	return res, err
}

// RunServiceStream is RunService that reports each container as it comes
// up (progress may be nil).
func (c *Client) RunServiceStream(ctx context.Context, req RunRequest, progress func(RunEvent) error) (ServiceResult, error) {
	return runStream(ctx, c, "RunService", PathServices+"?stream=1", req, progress)
}

// runStream reads a stream of RunEvents: progress gets each but the last,
// the result.
func runStream(ctx context.Context, c *Client, name, path string, req any, progress func(RunEvent) error) (ServiceResult, error) {
	var res ServiceResult
	err := stream(ctx, c, name, http.MethodPost, path, req, func(e RunEvent) error {
		switch {
		case e.Result != nil:
			res = *e.Result
		case progress != nil:
			return progress(e)
		}
		return nil
	})
	return res, err
}

// Containers lists every container of the network.
func (c *Client) Containers(ctx context.Context) ([]ContainerInfo, error) {
	var cs []ContainerInfo
	err := c.call(ctx, "Containers", http.MethodGet, PathContainers, nil, &cs)
	return cs, err
}

// Services lists the network's services.
func (c *Client) Services(ctx context.Context) ([]ServiceInfo, error) {
	var ss []ServiceInfo
	err := c.call(ctx, "Services", http.MethodGet, PathServices, nil, &ss)
	return ss, err
}

// InspectService describes one service and its containers.
func (c *Client) InspectService(ctx context.Context, name string) (ServiceDetail, error) {
	var d ServiceDetail
	err := c.call(ctx, "InspectService", http.MethodGet, under(PathServices, name), nil, &d)
	return d, err
}

// ScaleService makes the service have replicas containers.
func (c *Client) ScaleService(ctx context.Context, name string, req ScaleRequest) (ServiceResult, error) {
	var res ServiceResult
	err := c.call(ctx, "ScaleService", http.MethodPost, under(PathServices, name, "scale"), req, &res)
	return res, err
}

// ScaleServiceStream is ScaleService that reports pulls and new
// containers as they happen.
func (c *Client) ScaleServiceStream(ctx context.Context, name string, req ScaleRequest, progress func(RunEvent) error) (ServiceResult, error) {
	return runStream(ctx, c, "ScaleService", under(PathServices, name, "scale")+"?stream=1", req, progress)
}

// RemoveService removes a service and its containers.
func (c *Client) RemoveService(ctx context.Context, name string) (ServiceResult, error) {
	var res ServiceResult
	err := c.call(ctx, "RemoveService", http.MethodDelete, under(PathServices, name), nil, &res)
	return res, err
}

// StopService stops a service's containers.
func (c *Client) StopService(ctx context.Context, name string) (ServiceResult, error) {
	var res ServiceResult
	err := c.call(ctx, "StopService", http.MethodPost, under(PathServices, name, "stop"), nil, &res)
	return res, err
}

// StartService starts a service's stopped containers.
func (c *Client) StartService(ctx context.Context, name string) (ServiceResult, error) {
	var res ServiceResult
	err := c.call(ctx, "StartService", http.MethodPost, under(PathServices, name, "start"), nil, &res)
	return res, err
}

// ExecService runs a command in one of the service's containers.
func (c *Client) ExecService(ctx context.Context, name string, req ExecRequest) (ExecResult, error) {
	var res ExecResult
	err := c.call(ctx, "ExecService", http.MethodPost, under(PathServices, name, "exec"), req, &res)
	return res, err
}

// ServiceLogs streams the log lines of a service's containers.
func (c *Client) ServiceLogs(ctx context.Context, name string, o LogsRequest, line func(LogLine) error) error {
	q := url.Values{}
	q.Set("follow", strconv.FormatBool(o.Follow))
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Tail != "" {
		q.Set("tail", o.Tail)
	}
	return stream(ctx, c, "ServiceLogs", http.MethodGet, under(PathServices, name, "logs")+"?"+q.Encode(), nil, line)
}

// Deploy plans (and unless DryRun, applies) a set of services, reporting
// each step.
func (c *Client) Deploy(ctx context.Context, req DeployRequest, event func(DeployEvent) error) error {
	return stream(ctx, c, "Deploy", http.MethodPost, PathDeploy, req, event)
}

// PushImage copies an image from the machine's Docker to others,
// reporting progress.
func (c *Client) PushImage(ctx context.Context, req PushRequest, progress func(ImageProgress) error) error {
	return stream(ctx, c, "PushImage", http.MethodPost, PathImagePush, req, progress)
}
