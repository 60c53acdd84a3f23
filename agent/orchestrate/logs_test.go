package orchestrate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestLogsOfSeveralServices(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 2, Machines: []string{"m1", "m2"}})
	r.run(t, api.RunRequest{Name: "db", Image: "postgres", Machines: []string{"m3"}})
	r.run(t, api.RunRequest{Name: "cache", Image: "redis", Machines: []string{"m2"}})

	read := func(lr api.LogsRequest) ([]string, error) {
		var out []string
		err := r.o.Logs(ctx, lr, func(l api.LogLine) error {
			svc, _, _ := strings.Cut(l.Container, "-")
			out = append(out, svc+"@"+l.Machine)
			return nil
		})
		slices.Sort(out)
		return out, err
	}
	got, err := read(api.LogsRequest{Services: []string{"web", "db"}})
	if err != nil || !slices.Equal(got, []string{"db@m3", "web@m1", "web@m2"}) {
		t.Errorf("web and db: %q %v", got, err)
	}
	got, err = read(api.LogsRequest{})
	if err != nil || !slices.Equal(got, []string{"cache@m2", "db@m3", "web@m1", "web@m2"}) {
		t.Errorf("every service: %q %v", got, err)
	}
	if _, err := read(api.LogsRequest{Services: []string{"web", "wbe"}}); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "wbe") {
		t.Errorf("a typo: %v", err)
	}

	// --until cuts every machine at one instant, made absolute here; the
	// lines after it are dropped even if a machine sends them.
	r.engine.logOpts = nil
	got, err = read(api.LogsRequest{Services: []string{"web"}, Since: "2h", Until: "1h", Tail: "5"})
	if err != nil || len(got) != 0 {
		t.Errorf("lines of now with --until 1h: %q %v", got, err)
	}
	if len(r.engine.logOpts) != 2 {
		t.Fatalf("log calls: %+v", r.engine.logOpts)
	}
	for _, o := range r.engine.logOpts {
		until, err1 := time.Parse(time.RFC3339Nano, o.Until)
		since, err2 := time.Parse(time.RFC3339Nano, o.Since)
		if err1 != nil || err2 != nil || time.Since(until) < 59*time.Minute || until.Sub(since) != time.Hour || o.Tail != "5" ||
			o.Until != r.engine.logOpts[0].Until {
			t.Errorf("options sent: %+v", o)
		}
	}
	for _, bad := range []api.LogsRequest{{Since: "yesterday"}, {Until: "soon"}, {Tail: "ten"}, {Tail: "-1"}} {
		if _, err := read(bad); !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestLogTime(t *testing.T) {
	now := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	for in, want := range map[string]string{
		"":                          "",
		"10m":                       "2026-12-04T17:50:00Z",
		"1h30m":                     "2026-12-04T16:30:00Z",
		"1764871200":                "2025-12-04T18:00:00Z",
		"1764871200.5":              "2025-12-04T18:00:00.5Z",
		"2026-12-01T10:00:00Z":      "2026-12-01T10:00:00Z",
		"2026-12-01T10:00:00+02:00": "2026-12-01T08:00:00Z",
	} {
		if got, err := logTime("since", in, now); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	if _, err := logTime("until", "10 minutes", now); err == nil || !strings.Contains(err.Error(), "--until") {
		t.Errorf("a bad time: %v", err)
	}
}
