package main

// compose-go says some things only through logrus, the process-wide
// logger: a variable that is not set, an obsolete `version`, several
// default files in one directory. Printed as they come they would look
// unlike every other line of uncloud, and twice, since the files are
// loaded twice. So while loading they are collected and shown with the
// warnings.

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
)

type logCollector struct{ msgs []string }

func (c *logCollector) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (c *logCollector) Fire(e *logrus.Entry) error {
	c.msgs = append(c.msgs, e.Message)
	return nil
}

// collectComposeLog runs load with compose-go's log taken aside, and
// returns what it said, once each, in order, with paths below the current
// directory made relative. Not for concurrent use: logrus is global, and
// its hooks and output are put back when load returns.
func collectComposeLog(load func() error) ([]string, error) {
	std := logrus.StandardLogger()
	c := &logCollector{}
	hooks := std.ReplaceHooks(logrus.LevelHooks{})
	out := std.Out
	std.AddHook(c)
	std.SetOutput(io.Discard)
	defer func() {
		std.ReplaceHooks(hooks)
		std.SetOutput(out)
	}()
	err := load()
	wd, _ := os.Getwd()
	var msgs []string
	for _, m := range c.msgs {
		if strings.Contains(m, "the attribute `version` is obsolete") {
			continue // compose-go says it once per process; the loader says it each time
		}
		if wd != "" {
			m = strings.ReplaceAll(m, wd+string(filepath.Separator), "")
		}
		if !slices.Contains(msgs, m) {
			msgs = append(msgs, m)
		}
	}
	return msgs, err
}
