package main

// Messages and the log file. A line reporting a failure starts with
// "Error (ctr-cr CMD): " and a warning with "Warn  (ctr-cr CMD): ", as
// CRIU's do, so that tools grepping a log or stderr for "Error" find them.
// Errors and warnings always go to stderr; with -o/--log-file they are also
// written to the log, as are info lines (verbosity 3) and debug lines such
// as the --print-stats JSON (verbosity 4), each after the seconds since
// start. Without a log file, info and debug lines go to stderr when the
// verbosity asks for them.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/version"
)

// Verbosity levels, CRIU's: 0 nothing, 1 errors, 2 warnings (default),
// 3 information, 4 debug.
const (
	levelError   = 1
	levelWarn    = 2
	levelInfo    = 3
	levelDebug   = 4
	maxLevel     = levelDebug
	defaultLevel = levelWarn
)

// logConfig is what -o/--log-file, -W/--work-dir and -v set.
type logConfig struct {
	file    string
	workDir string
	level   int
}

// logOptions are the options of every command that can keep a log.
func logOptions(c *logConfig) []option {
	c.level = defaultLevel
	return []option{
		{names: []string{"o", "log-file"}, arg: "FILE", value: stringValue{&c.file},
			help: "also write the messages to FILE (relative: in the work dir, the image dir by default)"},
		{names: []string{"v", "verbosity"}, value: &levelValue{&c.level},
			help: "verbosity: each -v one more, -vN sets it (0-4; 3 adds info, 4 debug such as the stats)"},
		{names: []string{"W", "work-dir"}, arg: "DIR", value: stringValue{&c.workDir},
			help: "directory for the log file and a relative pid file (default: the image dir)"},
	}
}

// inWorkDir resolves a relative path of a log or pid file as CRIU does:
// against the work dir, which is the image dir unless -W says otherwise.
func (c *logConfig) inWorkDir(imageDir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	base := c.workDir
	if base == "" {
		base = imageDir
	}
	return filepath.Join(base, p)
}

// logger writes the messages of this run of ctr-cr.
type logger struct {
	cmd   string
	level int
	file  *os.File
	start time.Time
}

var msgs = &logger{level: defaultLevel, start: time.Now()}

// open starts the log file of c (if any), creating its directory (0700, as
// an image directory) when missing; imageDir is the base of a relative path.
func (l *logger) open(c *logConfig, imageDir string) error {
	l.level = c.level
	if c.file == "" {
		return nil
	}
	p := c.inWorkDir(imageDir, c.file)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	l.file = f
	l.infof("ctr-cr %s (pid %d): %s", version.Version, os.Getpid(), strings.Join(os.Args[1:], " "))
	return nil
}

// close flushes the log file to disk.
func (l *logger) close() {
	if l.file != nil {
		l.file.Sync()
		l.file.Close()
		l.file = nil
	}
}

// line writes one message of the given level: to stderr when toStderr,
// and to the log file when its level is within the verbosity.
func (l *logger) line(level int, kind, msg string, toStderr bool) {
	if kind != "" {
		msg = fmt.Sprintf("%s (ctr-cr %s): %s", kind, l.cmd, msg)
	}
	if toStderr {
		fmt.Fprintln(os.Stderr, msg)
	}
	if l.file != nil && level <= l.level {
		fmt.Fprintf(l.file, "(%09.6f) %s\n", time.Since(l.start).Seconds(), msg)
	}
}

// errorf reports a failure; always on stderr.
func (l *logger) errorf(format string, args ...any) {
	l.line(levelError, "Error", fmt.Sprintf(format, args...), true)
}

// warnf reports a warning; always on stderr.
func (l *logger) warnf(format string, args ...any) {
	l.line(levelWarn, "Warn ", fmt.Sprintf(format, args...), true)
}

// infof and debugf go to the log file, or to stderr without one when the
// verbosity asks for them.
func (l *logger) infof(format string, args ...any) {
	l.line(levelInfo, "", fmt.Sprintf(format, args...), l.file == nil && l.level >= levelInfo)
}

func (l *logger) debugf(format string, args ...any) {
	l.line(levelDebug, "", fmt.Sprintf(format, args...), l.file == nil && l.level >= levelDebug)
}
