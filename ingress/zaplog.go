package ingress

import (
	"context"
	"log/slog"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// certmagicLogger passes certmagic's zap logging to slog at debug level
// (certmagic is chatty; the ingress logs what matters itself).
func certmagicLogger(log *slog.Logger) *zap.Logger {
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return zap.NewNop()
	}
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{MessageKey: "msg", NameKey: "logger", LevelKey: "level",
		EncodeLevel: zapcore.LowercaseLevelEncoder})
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(slogWriter{log}), zap.DebugLevel))
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(b)), "component", "certmagic")
	return len(b), nil
}
