package orchestrate

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Logs: the lines of many containers on many machines, read from their
// machines at once and merged, each tagged with its container and machine.

// ServiceLogs implements api.ContainerBackend: one service's logs.
func (o *Orchestrator) ServiceLogs(ctx context.Context, name string, lr api.LogsRequest, line func(api.LogLine) error) error {
	lr.Services = []string{name}
	return o.Logs(ctx, lr, line)
}

// Logs implements api.LogsBackend: the logs of every container of the
// services named (every service when none is), read from their machines
// at once. Without Follow the lines are merged in time order; with Follow
// they are passed on as they come. A machine that cannot be read gives
// one line saying so. Since and Until are made absolute here, so every
// machine cuts at the same instant whatever its clock's idea of "10m ago".
func (o *Orchestrator) Logs(ctx context.Context, lr api.LogsRequest, line func(api.LogLine) error) error {
	now := time.Now()
	since, err := logTime("since", lr.Since, now)
	if err != nil {
		return err
	}
	until, err := logTime("until", lr.Until, now)
	if err != nil {
		return err
	}
	if lr.Tail != "" && lr.Tail != "all" {
		if n, err := strconv.Atoi(lr.Tail); err != nil || n < 0 {
			return fmt.Errorf("%w: --tail %q is not a number of lines or all", api.ErrBadRequest, lr.Tail)
		}
	}
	cs, err := o.logContainers(ctx, lr.Services, lr.Project)
	if err != nil || len(cs) == 0 {
		return err
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return err
	}
	byID := indexByID(all)
	opts := runtime.LogOptions{Follow: lr.Follow, Since: since, Until: until, Tail: lr.Tail}
	var untilTime time.Time
	if until != "" {
		untilTime, _ = time.Parse(time.RFC3339Nano, until)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan api.LogLine, 256)
	var wg sync.WaitGroup
	for _, c := range cs {
		t, ok := byID[c.MachineID]
		if !ok {
			t = Machine{ID: c.MachineID, Name: c.MachineID, State: "down"}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := o.logs(ctx, t, c.ID, opts, func(s string) error {
				l := api.LogLine{Container: c.Name, Machine: t.Name, Text: s}
				if ts, rest, ok := strings.Cut(s, " "); ok {
					if tm, err := time.Parse(time.RFC3339Nano, ts); err == nil {
						l.Time, l.Text = tm, rest
					}
				}
				// A machine whose agent predates --until sends what
				// follows it too.
				if !untilTime.IsZero() && l.Time.After(untilTime) {
					return nil
				}
				select {
				case lines <- l:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil && ctx.Err() == nil {
				select {
				case lines <- api.LogLine{Container: c.Name, Machine: t.Name, Time: time.Now(),
					Text: fmt.Sprintf("uncloud: logs of %s on %s: %v", c.Name, t.Name, err)}:
				case <-ctx.Done():
				}
			}
		}()
	}
	go func() { wg.Wait(); close(lines) }()
	if lr.Follow {
		for l := range lines {
			if err := line(l); err != nil {
				return err
			}
		}
		return nil
	}
	var got []api.LogLine
	for l := range lines {
		got = append(got, l)
	}
	sort.SliceStable(got, func(i, j int) bool { return got[i].Time.Before(got[j].Time) })
	for _, l := range got {
		if err := line(l); err != nil {
			return err
		}
	}
	return nil
}

// logContainers are the containers of the services named, or of every
// service; a name that is neither a service nor has containers is an
// error, so a typo is not an empty answer.
func (o *Orchestrator) logContainers(ctx context.Context, services []string, project string) ([]*record.Container, error) {
	services = slices.Clone(services)
	cs, err := o.serviceContainers(ctx, "")
	if err != nil {
		return nil, err
	}
	for i, s := range services {
		if services[i], err = o.serviceID(ctx, s); err != nil {
			return nil, err
		}
	}
	if project != "" {
		ps, err := o.projectServices(ctx, project)
		if err != nil {
			return nil, err
		}
		if len(ps) == 0 {
			return nil, fmt.Errorf("%w: project %q has no services (see 'uncloud ls')", api.ErrNotFound, project)
		}
		services = append(services, ps...)
	}
	want := map[string]bool{}
	for _, s := range services {
		want[s] = true
	}
	var out []*record.Container
	has := map[string]bool{}
	for _, c := range cs {
		if c.Service == "" {
			continue // not a service's: uncloud did not start it
		}
		if len(want) == 0 || want[c.Service] {
			out = append(out, c)
			has[c.Service] = true
		}
	}
	for _, s := range services {
		if !has[s] {
			if _, err := o.service(ctx, s); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// logTime makes a --since or --until value absolute (RFC 3339 with
// nanoseconds, which Docker takes): a duration is that long before now,
// Unix seconds and RFC 3339 times (with or without a zone) are as given.
// Empty stays empty.
func logTime(flag, v string, now time.Time) (string, error) {
	if v == "" {
		return "", nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d).UTC().Format(time.RFC3339Nano), nil
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Unix(0, int64(secs*1e9)).UTC().Format(time.RFC3339Nano), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t.UTC().Format(time.RFC3339Nano), nil
		}
	}
	return "", fmt.Errorf("%w: --%s %q is not a time (RFC 3339, e.g. 2026-01-02T15:04:05Z), Unix seconds or a duration (e.g. 10m)",
		api.ErrBadRequest, flag, v)
}
