package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"sync/atomic"
)

// logBridge routes memberlist's log.Logger output ("[LEVEL] memberlist:
// text") to slog at the matching level.
//
// It also counts decryption failures: memberlist reports them only through
// its log and the process-global go-metrics sink, and this package keeps no
// process-global state.
type logBridge struct {
	log           *slog.Logger
	undecryptable *atomic.Uint64
	suspected     func(name string) // a probe of name failed (may be nil)
}

func newMemberlistLogger(l *slog.Logger, undecryptable *atomic.Uint64, suspected func(string)) *log.Logger {
	return log.New(&logBridge{log: l.With("component", "memberlist"), undecryptable: undecryptable, suspected: suspected}, "", 0)
}

// splitLevel cuts memberlist's "[LEVEL]" prefix off line.
func splitLevel(line []byte) (slog.Level, []byte) {
	if len(line) == 0 || line[0] != '[' {
		return slog.LevelInfo, line
	}
	end := bytes.IndexByte(line, ']')
	if end < 0 {
		return slog.LevelInfo, line
	}
	level := slog.LevelInfo
	switch string(line[1:end]) {
	case "DEBUG", "TRACE":
		level = slog.LevelDebug
	case "WARN":
		level = slog.LevelWarn
	case "ERR", "ERROR":
		level = slog.LevelError
	}
	return level, bytes.TrimSpace(line[end+1:])
}

func (b *logBridge) Write(p []byte) (int, error) {
	level, line := splitLevel(bytes.TrimSpace(p))
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	if level >= slog.LevelWarn && bytes.Contains(bytes.ToLower(line), []byte("decrypt")) {
		// A machine with a stale key or a stray sender would flood the log
		// once per packet: warn on the 1st, 2nd, 4th, 8th … and count all.
		c := b.undecryptable.Add(1)
		level = slog.LevelDebug
		if c&(c-1) == 0 {
			level = slog.LevelWarn
		}
		b.log.Log(context.Background(), level, string(line), "undecryptable_total", c)
		return len(p), nil
	}
	if b.suspected != nil {
		if m := suspectLine.FindSubmatch(line); m != nil {
			b.suspected(string(m[1]))
		}
	}
	b.log.Log(context.Background(), level, string(line))
	return len(p), nil
}
