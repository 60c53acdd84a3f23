package api

import (
	"context"
	"slices"
	"testing"
)

type logsAgent struct {
	fakeAgent
	got LogsRequest
}

func (a *logsAgent) Logs(_ context.Context, o LogsRequest, line func(LogLine) error) error {
	a.got = o
	for _, s := range o.Services {
		if err := line(LogLine{Container: s + "-1", Machine: "m1", Text: "hi"}); err != nil {
			return err
		}
	}
	return nil
}

// TestLogsCall: the multi-service call carries the selection and every
// option to the backend, and its lines back.
func TestLogsCall(t *testing.T) {
	a := &logsAgent{}
	c := unixClient(t, NewLocalHandler(a))
	want := LogsRequest{Services: []string{"web", "db"}, Follow: true, Since: "10m", Until: "2026-01-02T03:04:05Z", Tail: "3"}
	var got []string
	err := c.Logs(context.Background(), want, func(l LogLine) error {
		got = append(got, l.Container+"@"+l.Machine+" "+l.Text)
		return nil
	})
	if err != nil || !slices.Equal(got, []string{"web-1@m1 hi", "db-1@m1 hi"}) {
		t.Fatalf("lines %q, %v", got, err)
	}
	if !slices.Equal(a.got.Services, want.Services) || a.got.Follow != want.Follow || a.got.Since != want.Since ||
		a.got.Until != want.Until || a.got.Tail != want.Tail {
		t.Errorf("the backend got %+v, want %+v", a.got, want)
	}
	if err := c.Logs(context.Background(), LogsRequest{}, func(LogLine) error { return nil }); err != nil || len(a.got.Services) != 0 {
		t.Errorf("every service: %+v %v", a.got, err)
	}
}
