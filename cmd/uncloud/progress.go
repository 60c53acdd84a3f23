package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/uncloud-mesh/uncloud/api"
)

// imageProgress shows api.ImageProgress lines: on a terminal, a live bar
// per machine (mpb); elsewhere (a log, CI, a pipe), one line per
// milestone, so a log of a long pull says what happened without a line
// per chunk.
type imageProgress struct {
	mu    sync.Mutex
	out   io.Writer
	bars  *mpb.Progress // nil when not on a terminal
	byKey map[string]*machineBar
	start time.Time
}

// machineBar is what the display knows of one machine's image.
type machineBar struct {
	bar    *mpb.Bar
	last   api.ImageProgress
	status string // last milestone printed
	ended  bool
}

// newImageProgress draws on f (stderr, normally): bars when f is a
// terminal, milestone lines otherwise.
func newImageProgress(f *os.File) *imageProgress {
	p := &imageProgress{out: f, byKey: map[string]*machineBar{}, start: time.Now()}
	if isatty.IsTerminal(f.Fd()) {
		p.bars = mpb.New(mpb.WithOutput(f), mpb.WithWidth(32), mpb.WithRefreshRate(150*time.Millisecond))
	}
	return p
}

// newImageProgressTo writes milestone lines to w (no bars): for tests and
// for outputs that are not files.
func newImageProgressTo(w io.Writer) *imageProgress {
	return &imageProgress{out: w, byKey: map[string]*machineBar{}, start: time.Now()}
}

// Update takes one progress line.
func (p *imageProgress) Update(u api.ImageProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := u.Machine + "\x00" + u.Image
	m := p.byKey[key]
	if m == nil {
		m = &machineBar{}
		p.byKey[key] = m
		if p.bars != nil {
			m.bar = p.bars.New(0, mpb.BarStyle().Lbound("[").Rbound("]"),
				mpb.PrependDecorators(decor.Name(u.Machine, decor.WCSyncSpaceR), decor.Any(func(decor.Statistics) string {
					p.mu.Lock()
					defer p.mu.Unlock()
					return statusWord(m.last)
				}, decor.WCSyncSpaceR)),
				mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
					p.mu.Lock()
					defer p.mu.Unlock()
					return sizeWords(m.last)
				})),
				mpb.BarFillerOnAbort(""))
		}
	}
	if m.ended {
		return
	}
	m.last = u
	if m.bar != nil {
		p.drawBar(m, u)
		return
	}
	p.printMilestone(m, u)
}

func (p *imageProgress) drawBar(m *machineBar, u api.ImageProgress) {
	switch {
	case u.Status == "failed":
		m.ended = true
		m.bar.Abort(false)
		// Bars are redrawn in place; the error gets a line of its own
		// above them, whole.
		fmt.Fprintf(p.bars, "%s: %s failed: %s\n", u.Machine, u.Image, u.Error)
	case u.Final():
		m.ended = true
		total := max(u.Total, u.Bytes, 1)
		m.bar.SetTotal(total, false)
		m.bar.SetCurrent(total)
	default:
		if u.Status == "resolved" && u.Error != "" {
			fmt.Fprintf(p.bars, "%s: warning: %s\n", u.Machine, u.Error)
		}
		if u.Total > 0 {
			m.bar.SetTotal(u.Total, false)
		}
		m.bar.SetCurrent(u.Bytes)
	}
}

// printMilestone prints a line when the status changes, and when a
// machine's image is done or failed.
func (p *imageProgress) printMilestone(m *machineBar, u api.ImageProgress) {
	if u.Status == m.status && !u.Final() {
		return
	}
	m.status = u.Status
	elapsed := time.Since(p.start).Round(100 * time.Millisecond)
	switch u.Status {
	case "failed":
		m.ended = true
		fmt.Fprintf(p.out, "%s: %s failed: %s\n", u.Machine, u.Image, u.Error)
	case "present":
		m.ended = true
		fmt.Fprintf(p.out, "%s: %s already there%s\n", u.Machine, u.Image, digestWords(u))
	case "done":
		m.ended = true
		fmt.Fprintf(p.out, "%s: %s ready%s (%s, %v)\n", u.Machine, u.Image, digestWords(u), sizeWords(u), elapsed)
	case "resolved":
		fmt.Fprintf(p.out, "%s: %s is %s\n", u.Machine, u.Image, u.Digest)
		if u.Error != "" {
			fmt.Fprintf(p.out, "%s: warning: %s\n", u.Machine, u.Error)
		}
	default:
		fmt.Fprintf(p.out, "%s: %s %s\n", u.Machine, statusWord(u), u.Image)
	}
}

// Wait ends the display: every bar drawn for the last time.
func (p *imageProgress) Wait() {
	if p.bars == nil {
		return
	}
	p.mu.Lock()
	for _, m := range p.byKey {
		if !m.ended {
			m.ended = true
			m.bar.Abort(false)
		}
	}
	p.mu.Unlock()
	p.bars.Wait()
}

func statusWord(u api.ImageProgress) string {
	if u.Layers > 0 && !u.Final() {
		return fmt.Sprintf("%s %d/%d layers", u.Status, u.LayersDone, u.Layers)
	}
	return u.Status
}

func sizeWords(u api.ImageProgress) string {
	if u.Total > 0 {
		return humanBytes(u.Bytes) + " / " + humanBytes(u.Total)
	}
	return humanBytes(u.Bytes)
}

func digestWords(u api.ImageProgress) string {
	if u.Digest == "" {
		return ""
	}
	return " " + shortDigest(u.Digest)
}

// shortDigest is "sha256:" and the first 12 hex digits.
func shortDigest(d string) string {
	const keep = len("sha256:") + 12
	if len(d) > keep {
		return d[:keep]
	}
	return d
}
