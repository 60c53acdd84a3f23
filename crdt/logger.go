package crdt

import (
	"fmt"
	"log/slog"
)

// stdLogger adapts slog to go-log's StandardLogger, which go-ds-crdt wants.
// go-ds-crdt logs every merged block at Debug and every 50th at Info: its
// Info goes to our Debug so a busy store does not flood the agent's log.
type stdLogger struct{ l *slog.Logger }

func (s stdLogger) Debug(a ...any)            { s.l.Debug(fmt.Sprint(a...)) }
func (s stdLogger) Debugf(f string, a ...any) { s.l.Debug(fmt.Sprintf(f, a...)) }
func (s stdLogger) Info(a ...any)             { s.l.Debug(fmt.Sprint(a...)) }
func (s stdLogger) Infof(f string, a ...any)  { s.l.Debug(fmt.Sprintf(f, a...)) }
func (s stdLogger) Warn(a ...any)             { s.l.Warn(fmt.Sprint(a...)) }
func (s stdLogger) Warnf(f string, a ...any)  { s.l.Warn(fmt.Sprintf(f, a...)) }
func (s stdLogger) Error(a ...any)            { s.l.Error(fmt.Sprint(a...)) }
func (s stdLogger) Errorf(f string, a ...any) { s.l.Error(fmt.Sprintf(f, a...)) }
func (s stdLogger) Fatal(a ...any)            { s.l.Error(fmt.Sprint(a...)) }
func (s stdLogger) Fatalf(f string, a ...any) { s.l.Error(fmt.Sprintf(f, a...)) }
func (s stdLogger) Panic(a ...any)            { panic(fmt.Sprint(a...)) }
func (s stdLogger) Panicf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
