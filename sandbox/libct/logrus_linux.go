package libct

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
)

// libcontainer logs through the process-wide logrus logger. We route it, once
// per process, to the zerolog logger of the most recently created backend.
var (
	logrusOnce sync.Once
	logrusSink atomic.Pointer[zerolog.Logger]
)

func routeLogrus(l zerolog.Logger) {
	logrusSink.Store(&l)
	logrusOnce.Do(func() {
		logrus.SetOutput(io.Discard)
		// logrus formats every entry before writing it, even to io.Discard.
		logrus.SetFormatter(nopFormatter{})
		logrus.AddHook(forwardHook{})
	})
	// Let logrus build debug entries only when someone will read them.
	if l.GetLevel() <= zerolog.DebugLevel && zerolog.GlobalLevel() <= zerolog.DebugLevel {
		logrus.SetLevel(logrus.DebugLevel)
	} else {
		logrus.SetLevel(logrus.WarnLevel)
	}
}

type nopFormatter struct{}

func (nopFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }

type forwardHook struct{}

func (forwardHook) Levels() []logrus.Level { return logrus.AllLevels }

func (forwardHook) Fire(e *logrus.Entry) error {
	l := logrusSink.Load()
	if l == nil {
		return nil
	}
	ev := l.Debug()
	if !ev.Enabled() {
		return nil
	}
	ev = ev.Str("from", "libcontainer").Str("lvl", e.Level.String())
	for k, v := range e.Data {
		ev = ev.Interface(k, v)
	}
	ev.Msg(e.Message)
	return nil
}
