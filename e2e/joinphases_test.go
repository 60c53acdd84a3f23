package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// A join's timeline, read from the agents' debug logs, for TestJoinOrder:
// when the joiner read its token, was admitted, had its device and its
// agent up, and when its slowest pair of machines had a path both ways, a
// restarted handshake and a handshake seen. Times are from the command's
// start (the agents log in UTC with millisecond precision, on the test's
// clock: every host is a namespace of this machine).

var (
	logLine   = regexp.MustCompile(`^time=(\S+) level=\w+ msg="([^"]*)"(.*)$`)
	logAttr   = regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`)
	pathMsgs  = map[string]bool{"direct path": true, "relayed path": true}
	phaseMsgs = []struct{ msg, name string }{
		{"join: token read", "token read"},
		{"join: admitted", "admitted"},
		{"Interface state was Down, requested Up, now Up", "device up"},
		{"machine up", "agent up"},
	}
)

type logEntry struct {
	at    time.Time
	msg   string
	attrs map[string]string
}

func parseLog(text string) []logEntry {
	var out []logEntry
	for _, line := range strings.Split(text, "\n") {
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		e := logEntry{at: at, msg: m[2], attrs: map[string]string{}}
		for _, a := range logAttr.FindAllStringSubmatch(m[3], -1) {
			e.attrs[a[1]] = strings.Trim(a[2], `"`)
		}
		out = append(out, e)
	}
	return out
}

// joinTimeline describes join's phases; logs are the agents' logs by
// machine name (the joiner's included), ids their machine ids.
func joinTimeline(start time.Time, joiner string, logs map[string]string) string {
	parsed := map[string][]logEntry{}
	nameOf := map[string]string{} // machine id or name → name
	for name, text := range logs {
		parsed[name] = parseLog(text)
		nameOf[name] = name
		for _, e := range parsed[name] {
			if e.msg == "machine up" && e.attrs["id"] != "" {
				nameOf[e.attrs["id"]] = name
			}
		}
	}
	since := func(t time.Time) string { return t.Sub(start).Round(time.Millisecond).String() }
	var parts []string
	for _, ph := range phaseMsgs {
		for _, e := range parsed[joiner] {
			if e.msg == ph.msg && !e.at.Before(start.Truncate(time.Millisecond)) {
				parts = append(parts, ph.name+" "+since(e.at))
				break
			}
		}
	}
	// first[h][peer]: when h first logged msg about peer, after start.
	first := func(match func(string) bool) map[[2]string]time.Time {
		out := map[[2]string]time.Time{}
		for h, es := range parsed {
			for _, e := range es {
				peer := nameOf[e.attrs["peer"]]
				if !match(e.msg) || peer == "" || e.at.Before(start) || (h != joiner && peer != joiner) {
					continue
				}
				k := [2]string{h, peer}
				if _, ok := out[k]; !ok {
					out[k] = e.at
				}
			}
		}
		return out
	}
	// slowest pair: both sides (path), either side (restart, handshake).
	slowest := func(firsts map[[2]string]time.Time, both bool) string {
		var worst time.Time
		var who string
		for h := range parsed {
			if h == joiner {
				continue
			}
			a, okA := firsts[[2]string{h, joiner}]
			b, okB := firsts[[2]string{joiner, h}]
			var t time.Time
			switch {
			case both && okA && okB:
				t = a
				if b.After(a) {
					t = b
				}
			case both:
				continue
			case okA && (!okB || a.Before(b)):
				t = a
			case okB:
				t = b
			default:
				continue
			}
			if t.After(worst) {
				worst, who = t, h
			}
		}
		if who == "" {
			return "none"
		}
		return fmt.Sprintf("%s (%s↔%s)", since(worst), who, joiner)
	}
	parts = append(parts,
		"paths both ways "+slowest(first(func(m string) bool { return pathMsgs[m] }), true),
		"last handshake restart "+slowest(first(func(m string) bool { return m == "no handshake yet: initiating one now" }), false),
		"handshakes seen "+slowest(first(func(m string) bool { return m == "first handshake seen" }), false))
	return strings.Join(parts, ", ")
}
