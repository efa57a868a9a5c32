//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
)

// stderr is standard error shared by the logger and the spinner: a log line
// written while the spinner shows erases the spinner's line first and
// redraws it after, so the two never mix on a terminal.
var stderr = &termWriter{f: os.Stderr}

type termWriter struct {
	mu   sync.Mutex
	f    *os.File
	live string // the spinner's line, drawn last; "" when none
}

func (t *termWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.live == "" {
		return t.f.Write(p)
	}
	fmt.Fprint(t.f, "\r\033[K")
	n, err := t.f.Write(p)
	fmt.Fprint(t.f, t.live)
	return n, err
}

// setLive replaces the spinner's line ("" erases it).
func (t *termWriter) setLive(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprint(t.f, "\r\033[K"+line)
	t.live = line
}

// spinner shows that a command waits on long work: a spinning mark, what is
// going on and, when the work is counted, a bar. It draws only when
// standard error is a terminal; elsewhere (logs, tests, pipes) it stays
// silent. A nil *spinner does nothing, so callers need not check.
type spinner struct {
	mu     sync.Mutex
	msg    string
	done   int
	total  int
	start  time.Time
	quit   chan struct{}
	ended  chan struct{}
	redraw chan struct{}
	once   sync.Once
}

// spinnerFrames are drawn in turn, one per tick.
var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// startSpinner starts drawing msg on standard error if it is a terminal;
// it returns nil otherwise.
func startSpinner(msg string) *spinner {
	if !isatty.IsTerminal(stderr.f.Fd()) {
		return nil
	}
	s := &spinner{msg: msg, start: time.Now(), quit: make(chan struct{}), ended: make(chan struct{}), redraw: make(chan struct{}, 1)}
	go s.loop()
	return s
}

// set changes the message; total > 0 adds a bar of done out of total.
func (s *spinner) set(msg string, done, total int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.msg, s.done, s.total = msg, done, total
	s.mu.Unlock()
	select {
	case s.redraw <- struct{}{}:
	default:
	}
}

// stop erases the line and returns once nothing more is drawn. It may be
// called more than once.
func (s *spinner) stop() {
	if s == nil {
		return
	}
	s.once.Do(func() { close(s.quit) })
	<-s.ended
}

func (s *spinner) loop() {
	defer close(s.ended)
	t := time.NewTicker(80 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		stderr.setLive(s.line(spinnerFrames[i%len(spinnerFrames)]))
		select {
		case <-s.quit:
			stderr.setLive("")
			return
		case <-t.C:
		case <-s.redraw:
		}
	}
}

func (s *spinner) line(frame string) string {
	s.mu.Lock()
	msg, done, total := s.msg, s.done, s.total
	s.mu.Unlock()
	line := frame + " " + msg
	if total > 0 {
		line += " " + bar(done, total, 20) + fmt.Sprintf(" %d/%d", done, total)
	}
	return line + fmt.Sprintf("  %.1fs", time.Since(s.start).Seconds())
}

// bar draws done out of total as width cells.
func bar(done, total, width int) string {
	n := 0
	if total > 0 {
		n = min(width, max(0, done*width/total))
	}
	return "[" + strings.Repeat("█", n) + strings.Repeat("·", width-n) + "]"
}
