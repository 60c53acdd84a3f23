package gossip

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

func TestLogBridge(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel string
		wantMsg   string
		decrypt   bool
	}{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4:5", "DEBUG", "Stream connection from=1.2.3.4:5", false},
		{"[INFO] memberlist: Suspect m03 has failed", "INFO", "Suspect m03 has failed", false},
		{"[WARN] memberlist: Refuting a dead message", "WARN", "Refuting a dead message", false},
		{"[ERR] memberlist: Push/Pull with m03 failed", "ERROR", "Push/Pull with m03 failed", false},
		{"[ERR] memberlist: Decrypt packet failed: x", "WARN", "Decrypt packet failed: x", true},
		{"no prefix at all", "INFO", "no prefix at all", false},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		var c atomic.Uint64
		l := newMemberlistLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})), &c, nil)
		l.Print(tt.line)
		got := out.String()
		if !strings.Contains(got, "level="+tt.wantLevel) || !strings.Contains(got, tt.wantMsg) {
			t.Errorf("%q logged as %q, want level %s and message %q", tt.line, got, tt.wantLevel, tt.wantMsg)
		}
		if (c.Load() == 1) != tt.decrypt {
			t.Errorf("%q: undecryptable count %d", tt.line, c.Load())
		}
	}
}
