package ui

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"sort"
	"strings"
	"time"
)

// edge is one pair of machines as the picture draws it.
type edge struct {
	A, B  string // names, A < B
	Path  string // direct, relayed, probing, rotating, cut (a side reports no path), unknown (no report)
	Via   string
	RTT   time.Duration
	Label string
}

// meshEdges pairs every two machines and says what their reports tell of
// the path between them. A pair is cut when either side reports it does
// not reach the other; unknown when neither side could be asked.
func meshEdges(snap snapshot) []edge {
	byName := map[string]machineRow{}
	idName := map[string]string{}
	for _, m := range snap.Machines {
		byName[m.Name] = m
		idName[m.ID] = m.Name
	}
	type report struct {
		reached bool
		path    string
		via     string
		rtt     time.Duration
	}
	reports := map[[2]string][]report{}
	key := func(a, b string) [2]string {
		if a > b {
			a, b = b, a
		}
		return [2]string{a, b}
	}
	for _, m := range snap.Machines {
		if m.View == nil {
			continue
		}
		for _, p := range m.View.Mesh.Peers {
			other, ok := byName[p.Machine]
			if !ok || other.ID == m.ID {
				continue
			}
			reports[key(m.Name, p.Machine)] = append(reports[key(m.Name, p.Machine)],
				report{reached: m.View.Reaches[other.ID], path: p.Path, via: p.Via, rtt: p.RTT})
		}
		// A peer that its report leaves out entirely is one it has no
		// WireGuard peer for: no path.
		for _, o := range snap.Machines {
			if o.ID == m.ID {
				continue
			}
			k := key(m.Name, o.Name)
			found := false
			for _, p := range m.View.Mesh.Peers {
				if p.Machine == o.Name {
					found = true
				}
			}
			if !found {
				reports[k] = append(reports[k], report{reached: m.View.Reaches[o.ID]})
			}
		}
	}
	var out []edge
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, a := range names {
		for _, b := range names[i+1:] {
			e := edge{A: a, B: b, Path: "unknown", Label: "no report"}
			rs := reports[key(a, b)]
			for _, r := range rs {
				if !r.reached {
					e.Path, e.Label = "cut", "no path"
					break
				}
				if r.path != "" && (e.Path == "unknown" || r.path == "relayed") {
					e.Path, e.Via = r.path, r.via
				}
				if r.rtt > 0 && (e.RTT == 0 || r.rtt < e.RTT) {
					e.RTT = r.rtt
				}
			}
			switch e.Path {
			case "direct":
				e.Label = "direct"
			case "relayed":
				e.Label = "via " + e.Via
			case "probing", "rotating":
				e.Label = e.Path
			}
			if e.RTT > 0 && e.Path != "cut" {
				e.Label += " · " + fmtRTT(e.RTT)
			}
			out = append(out, e)
		}
	}
	return out
}

func fmtRTT(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// meshSVG draws the machines on a circle and an edge per pair.
func meshSVG(snap snapshot, edges []edge) template.HTML {
	const w, h, r = 640.0, 400.0, 30.0
	n := len(snap.Machines)
	pos := map[string][2]float64{}
	radius := 150.0
	for i, m := range snap.Machines {
		switch n {
		case 1:
			pos[m.Name] = [2]float64{w / 2, h / 2}
		default:
			a := -math.Pi/2 + 2*math.Pi*float64(i)/float64(n)
			pos[m.Name] = [2]float64{w/2 + radius*1.35*math.Cos(a), h/2 + radius*math.Sin(a)}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="mesh" viewBox="0 0 %.0f %.0f" role="img" aria-label="mesh of %d machines as %s sees it">`, w, h, n, html.EscapeString(snap.Self))
	for _, e := range edges {
		p, q := pos[e.A], pos[e.B]
		fmt.Fprintf(&b, `<g class="edge e-%s" data-pair="%s-%s" data-path="%s"><title>%s – %s: %s</title>`,
			e.Path, html.EscapeString(e.A), html.EscapeString(e.B), e.Path, html.EscapeString(e.A), html.EscapeString(e.B), html.EscapeString(e.Label))
		// The line stops at the circles' rims.
		dx, dy := q[0]-p[0], q[1]-p[1]
		if l := math.Hypot(dx, dy); l > 2*r {
			ux, uy := dx/l*(r+4), dy/l*(r+4)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, p[0]+ux, p[1]+uy, q[0]-ux, q[1]-uy)
		}
		// The label sits beside its line, on the side away from the
		// picture's centre, so no line crosses it.
		// Text grows sideways from its anchor: to the right of a line
		// whose outside is to the right, to the left of one whose outside
		// is to the left, centred above or below a level one.
		mx, my := (p[0]+q[0])/2, (p[1]+q[1])/2
		anchor := "middle"
		if l := math.Hypot(dx, dy); l > 0 {
			nx, ny := -dy/l, dx/l
			if nx*(mx-w/2)+ny*(my-h/2) < 0 {
				nx, ny = -nx, -ny
			}
			switch {
			case nx > 0.3:
				anchor = "start"
			case nx < -0.3:
				anchor = "end"
			}
			mx, my = mx+nx*10, my+ny*10+4
			if anchor == "middle" && ny > 0 {
				my += 8
			}
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="%s" class="elabel">%s</text></g>`, mx, my, anchor, html.EscapeString(e.Label))
	}
	for _, m := range snap.Machines {
		p := pos[m.Name]
		sub := m.Mode
		if m.View != nil && m.View.Mesh.NAT != "" {
			sub += " · NAT " + m.View.Mesh.NAT
		}
		if !m.Seen && m.Shown != "self" {
			sub = m.Shown
		}
		fmt.Fprintf(&b, `<g class="node s-%s" data-machine="%s" data-state="%s"><title>%s: %s</title>`,
			m.Shown, html.EscapeString(m.Name), m.Shown, html.EscapeString(m.Name), m.Shown)
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="%.0f"/>`, p[0], p[1], r)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="nname">%s</text>`, p[0], p[1]+5, html.EscapeString(m.Name))
		// Below the node, or above it when the node is in the upper half,
		// where its lines leave downwards.
		subY := p[1] + r + 18
		if n > 1 && p[1] < h/2-1 {
			subY = p[1] - r - 10
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="nsub">%s</text></g>`, p[0], subY, html.EscapeString(sub))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
