package main

// The command-line layer: every command's options are one table ([]option)
// listing each spelling an option has (ctr-cr's own and CRIU's, so that
// scripts written for CRIU run unchanged), what it sets and its help line.
// Adding a flag is adding one table row.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// option is one row of a command's flag table.
type option struct {
	names []string   // every spelling, without dashes: one letter is -x, longer is --name
	arg   string     // the argument's name in the help ("" for a switch)
	help  string     // one line
	value flag.Value // what the option sets
	// refuse, when set, makes the option an error naming it: CRIU
	// spellings that ask for something ctr-cr does not do are refused,
	// never accepted and ignored.
	refuse string
}

// errHelp: the command's help was printed (-h/--help); exit 0.
var errHelp = errors.New("help printed")

// usageError is a wrong command line: exit status 2, with the command's
// one-line usage after the message.
type usageError struct {
	synopsis string
	err      error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a usageError for the command described by synopsis.
func usageErrorf(synopsis, format string, args ...any) error {
	return &usageError{synopsis: synopsis, err: fmt.Errorf(format, args...)}
}

// spelling returns how a flag name is written on the command line.
func spelling(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// parseOptions parses args against the table: help (-h, --help) goes to
// out and returns errHelp; an unknown flag, a bad value or a refused option
// returns a *usageError. It returns the positional arguments.
func parseOptions(name, synopsis string, opts []option, args []string, out io.Writer) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by the caller, once
	fs.Usage = func() {}
	refused := map[string]string{}
	for _, o := range opts {
		for _, n := range o.names {
			fs.Var(o.value, n, o.help)
			if o.refuse != "" {
				refused[n] = o.refuse
			}
		}
	}
	err := fs.Parse(expandShort(fs, args))
	if errors.Is(err, flag.ErrHelp) {
		printHelp(out, synopsis, opts)
		return nil, errHelp
	}
	if err != nil {
		if n, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			err = fmt.Errorf("unknown option %s", spelling(n))
		}
		return nil, &usageError{synopsis: synopsis, err: err}
	}
	var bad error
	fs.Visit(func(f *flag.Flag) {
		if why, ok := refused[f.Name]; ok && bad == nil {
			bad = usageErrorf(synopsis, "%s: not supported: %s", spelling(f.Name), why)
		}
	})
	if bad != nil {
		return nil, bad
	}
	return fs.Args(), nil
}

// expandShort rewrites a getopt-style command line into the form of Go's
// flag package: clusters it does not know are split, -vvv (three -v), -v4
// (-v=4), -jd (-j -d), -ofile (-o file), -t42; and, as getopt does,
// positional arguments may come between options (restore BUNDLE -d): they
// are moved after a "--", with everything that follows a "--" given.
func expandShort(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args)+1)
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if a == "-" || !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := fs.Lookup(name); f != nil {
			out = append(out, a)
			if !hasValue && !isBoolFlag(f) {
				if i+1 == len(args) {
					return out // its value is missing: flag says so
				}
				out = append(out, args[i+1]) // its value, even if it starts with "-"
				i++
			}
			continue
		}
		if strings.HasPrefix(a, "--") || hasValue || len(name) < 2 {
			out = append(out, a) // unknown: flag reports it
			continue
		}
		words, ok := expandCluster(fs, name)
		if !ok {
			out = append(out, a)
			continue
		}
		out = append(out, words...)
		if last := fs.Lookup(strings.TrimPrefix(words[len(words)-1], "-")); last != nil && !isBoolFlag(last) {
			if i+1 == len(args) {
				return out // its value is missing: flag says so
			}
			out = append(out, args[i+1])
			i++
		}
	}
	if len(pos) > 0 {
		out = append(append(out, "--"), pos...)
	}
	return out
}

// expandCluster splits the letters of one -cluster into flags: switches
// stand alone; a flag taking a value takes the rest of the cluster (or the
// next word when nothing is left); a counting flag (-v) takes a number
// that follows it as its value.
func expandCluster(fs *flag.FlagSet, cluster string) ([]string, bool) {
	var words []string
	for j := 0; j < len(cluster); j++ {
		c := cluster[j : j+1]
		f := fs.Lookup(c)
		if f == nil {
			return nil, false
		}
		rest := cluster[j+1:]
		if isBoolFlag(f) {
			if _, counted := f.Value.(*levelValue); counted && rest != "" && isDigits(rest) {
				return append(words, "-"+c+"="+rest), true
			}
			words = append(words, "-"+c)
			continue
		}
		if rest == "" {
			return append(words, "-"+c), true // value in the next word
		}
		return append(words, "-"+c+"="+rest), true
	}
	return words, true
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// printHelp writes the command's usage and its option table.
func printHelp(w io.Writer, synopsis string, opts []option) {
	fmt.Fprintf(w, "usage: ctr-cr %s\n\noptions:\n", synopsis)
	for _, o := range opts {
		var sp []string
		for _, n := range o.names {
			sp = append(sp, spelling(n))
		}
		left := strings.Join(sp, ", ")
		switch {
		case strings.HasPrefix(o.arg, "["):
			left += o.arg // an optional value: --name[=VALUE]
		case o.arg != "":
			left += " " + o.arg
		}
		help := o.help
		if o.refuse != "" {
			help = "refused: " + o.refuse
		}
		fmt.Fprintf(w, "  %-34s %s\n", left, help)
	}
	fmt.Fprintln(w, "  -h, --help                         this help")
}

// Flag values. Each points at the field of a command's configuration it sets.

type boolValue struct{ p *bool }

func (v boolValue) IsBoolFlag() bool { return true }
func (v boolValue) String() string   { return strconv.FormatBool(v.p != nil && *v.p) }
func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("takes no value")
	}
	*v.p = b
	return nil
}

type stringValue struct{ p *string }

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v stringValue) Set(s string) error { *v.p = s; return nil }

type intValue struct{ p *int }

func (v intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}
func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not a number: %q", s)
	}
	*v.p = n
	return nil
}

// modeValue is an option with an optional value, CRIU's
// --manage-cgroups[=MODE]: alone it means def.
type modeValue struct {
	p   *string
	def string
}

func (v modeValue) IsBoolFlag() bool { return true }
func (v modeValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v modeValue) Set(s string) error {
	if s == "true" {
		s = v.def
	}
	*v.p = s
	return nil
}

// levelValue is the verbosity, CRIU's -v: each -v (or --verbosity without a
// value) raises it by one, -vN or --verbosity=N sets it; 0 to 4.
type levelValue struct{ p *int }

func (v *levelValue) IsBoolFlag() bool { return true }
func (v *levelValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}
func (v *levelValue) Set(s string) error {
	if s == "true" {
		if *v.p < maxLevel {
			*v.p++
		}
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxLevel {
		return fmt.Errorf("verbosity %q: want 0 to %d", s, maxLevel)
	}
	*v.p = n
	return nil
}
