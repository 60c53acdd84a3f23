package api

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
)

// fakeAgent answers a few calls for the real local handler; the embedded
// interfaces are nil, so any other call panics, which is the point: only
// the calls under test may be reached.
type fakeAgent struct {
	Backend
	ContainerBackend
	DNSBackend
	DeployBackend
	ImageBackend
	scaled string
}

func (f *fakeAgent) Status(context.Context) (Status, error) { return Status{Name: "m1"}, nil }

func (f *fakeAgent) RemoveMachine(_ context.Context, name string) (RemoveResult, error) {
	return RemoveResult{}, fmt.Errorf("%w: no machine named %q", ErrNotFound, name)
}

func (f *fakeAgent) ScaleService(_ context.Context, name string, req ScaleRequest, _ func(RunEvent)) (ServiceResult, error) {
	f.scaled = fmt.Sprintf("%s=%d", name, req.Replicas)
	return ServiceResult{Service: name}, nil
}

func (f *fakeAgent) DNSQuery(_ context.Context, name, qtype string) (DNSAnswer, error) {
	return DNSAnswer{Rcode: "NOERROR", Answer: []string{name + " " + qtype}}, nil
}

func (f *fakeAgent) Deploy(_ context.Context, req DeployRequest, event func(DeployEvent) error) error {
	if err := event(DeployEvent{Plan: true, Service: req.Services[0].Name, Action: "create"}); err != nil {
		return err
	}
	return fmt.Errorf("%w: machine m2", ErrUnavailable)
}

// TestLocalClientAgainstHandler runs the typed client against the real
// router: the client's paths and the handler's routes are the same ones.
func TestLocalClientAgainstHandler(t *testing.T) {
	f := &fakeAgent{}
	srv := httptest.NewServer(NewLocalHandler(f))
	defer srv.Close()
	c := testLocalClient(srv)
	ctx := context.Background()

	if st, err := c.Status(ctx); err != nil || st.Name != "m1" {
		t.Errorf("Status = %+v, %v", st, err)
	}
	if _, err := c.RemoveMachine(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveMachine error = %v, want ErrNotFound", err)
	}
	if res, err := c.ScaleService(ctx, "web", ScaleRequest{Replicas: 3}); err != nil || res.Service != "web" || f.scaled != "web=3" {
		t.Errorf("ScaleService = %+v, %v (agent saw %q)", res, err, f.scaled)
	}
	if a, err := c.DNSQuery(ctx, "web.internal", "SRV"); err != nil || len(a.Answer) != 1 || a.Answer[0] != "web.internal SRV" {
		t.Errorf("DNSQuery = %+v, %v", a, err)
	}
	var events []DeployEvent
	err := c.Deploy(ctx, DeployRequest{Services: []RunRequest{{Name: "web"}}}, func(e DeployEvent) error {
		events = append(events, e)
		return nil
	})
	if len(events) != 1 || events[0].Service != "web" {
		t.Errorf("Deploy events = %+v", events)
	}
	var ce *CallError
	if !errors.As(err, &ce) || ce.Call != "Deploy" {
		t.Errorf("Deploy error = %v, want a *CallError for Deploy", err)
	}
}
