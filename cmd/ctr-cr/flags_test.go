package main

import (
	"bytes"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
)

// TestDumpFlags: ctr-cr's and CRIU's spellings of dump's options set the
// same configuration.
func TestDumpFlags(t *testing.T) {
	base := func(f func(c *dumpConfig)) dumpConfig {
		c := dumpConfig{pid: 42, dir: "/img", ghost: "1M", log: logConfig{level: defaultLevel}, extMounts: map[string]string{}}
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		args []string
		want dumpConfig
	}{
		{"ctr-cr's", []string{"-t", "42", "-D", "/img", "--leave-running", "--shell-job"},
			base(func(c *dumpConfig) { c.leave, c.shellJob = true, true })},
		{"CRIU long", []string{"--tree", "42", "--images-dir", "/img", "--leave-running", "--tcp-established", "--ext-unix-sk", "--file-locks", "--link-remap", "--network-lock", "nftables", "--manage-cgroups=ignore", "--log-file", "dump.log", "--work-dir", "/w"},
			base(func(c *dumpConfig) {
				c.leave, c.tcpEst, c.extUnixSk = true, true, true
				c.criu = criuConfig{fileLocks: true, linkRemap: true, networkLock: "nftables", manageCgroups: "ignore"}
				c.log.file, c.log.workDir = "dump.log", "/w"
			})},
		{"CRIU short", []string{"-t", "42", "-D", "/img", "-R", "-j", "-o", "dump.log", "-v4"},
			base(func(c *dumpConfig) { c.leave, c.shellJob, c.log.file, c.log.level = true, true, "dump.log", 4 })},
		{"getopt clusters", []string{"-t42", "-D/img", "-Rj", "-odump.log", "-vv"},
			base(func(c *dumpConfig) { c.leave, c.shellJob, c.log.file, c.log.level = true, true, "dump.log", 4 })},
		{"single -v", []string{"-t", "42", "-D", "/img", "-v"},
			base(func(c *dumpConfig) { c.log.level = 3 })},
		{"-v0 and --verbosity=1", []string{"-t", "42", "-D", "/img", "-v0", "--verbosity=1"},
			base(func(c *dumpConfig) { c.log.level = 1 })},
		{"value starting with a dash", []string{"-t", "42", "-D", "/img", "-o", "-weird.log"},
			base(func(c *dumpConfig) { c.log.file = "-weird.log" })},
		{"LXC's in-flight and closing", []string{"-t", "42", "-D", "/img", "--skip-in-flight", "--tcp-close"},
			base(func(c *dumpConfig) { c.skipInFlight, c.criu.tcpClose = true, true })},
		{"--sign-key", []string{"-t", "42", "-D", "/img", "--sign-key", "/k.key"},
			base(func(c *dumpConfig) { c.signKey = "/k.key" })},
		{"ghost limit and jobs", []string{"-t", "42", "-D", "/img", "--ghost-limit", "4M", "--jobs=1", "--freeze-cgroup", "/cg"},
			base(func(c *dumpConfig) { c.ghost, c.jobs, c.freezeCg = "4M", 1, "/cg" })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c dumpConfig
			if _, err := parseOptions("dump", dumpSynopsis, dumpOptions(&c), tc.args, nil); err != nil {
				t.Fatalf("parse %q: %v", tc.args, err)
			}
			if err := c.criu.check(dumpSynopsis); err != nil {
				t.Fatalf("check %q: %v", tc.args, err)
			}
			if !reflect.DeepEqual(c, tc.want) {
				t.Errorf("parse %q:\n got %+v\nwant %+v", tc.args, c, tc.want)
			}
		})
	}
}

// TestRestoreFlags: the restore-side CRIU spellings, including those that
// only confirm what the image holds.
func TestRestoreFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want func(c *restoreConfig) bool
	}{
		{"--restore-detached", []string{"-D", "/img", "--restore-detached"}, func(c *restoreConfig) bool { return c.detach }},
		{"-d", []string{"-D", "/img", "-d"}, func(c *restoreConfig) bool { return c.detach }},
		{"--detach", []string{"-D", "/img", "--detach"}, func(c *restoreConfig) bool { return c.detach }},
		{"--pidfile", []string{"-D", "/img", "--pidfile", "p"}, func(c *restoreConfig) bool { return c.pidFile == "p" }},
		{"--pid-file", []string{"-D", "/img", "--pid-file=p"}, func(c *restoreConfig) bool { return c.pidFile == "p" }},
		{"-j", []string{"-D", "/img", "-j"}, func(c *restoreConfig) bool { return c.shellJob }},
		{"confirmations", []string{"-D", "/img", "--tcp-established", "--ext-unix-sk", "--file-locks"},
			func(c *restoreConfig) bool { return c.tcpEst && c.extUnixSk && c.criu.fileLocks }},
		{"--tcp-close, --skip-in-flight", []string{"-D", "/img", "--tcp-close", "--skip-in-flight"}, func(c *restoreConfig) bool { return c.criu.tcpClose }},
		{"log", []string{"--images-dir", "/img", "-o", "restore.log", "-v4"},
			func(c *restoreConfig) bool { return c.dir == "/img" && c.log.file == "restore.log" && c.log.level == 4 }},
		{"default pid method", []string{"-D", "/img"}, func(c *restoreConfig) bool { return c.method == "clone3" && c.log.level == defaultLevel }},
		{"--verify-key", []string{"-D", "/img", "--verify-key=/k.pub"}, func(c *restoreConfig) bool { return c.verifyKey == "/k.pub" }},
		{"--verify-key, container", []string{"--verify-key", "/k.pub", "/bundle"}, func(c *restoreConfig) bool { return c.verifyKey == "/k.pub" }},
		{"container form", []string{"--id", "x", "-d", "/bundle"}, func(c *restoreConfig) bool { return c.id == "x" && c.detach }},
		{"options after the bundle", []string{"/bundle", "-d", "--pidfile", "p"}, func(c *restoreConfig) bool { return c.detach && c.pidFile == "p" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c restoreConfig
			if _, err := parseOptions("restore", restoreSynopsis, restoreOptions(&c), tc.args, nil); err != nil {
				t.Fatalf("parse %q: %v", tc.args, err)
			}
			if err := c.criu.check(restoreSynopsis); err != nil {
				t.Fatalf("check %q: %v", tc.args, err)
			}
			if !tc.want(&c) {
				t.Errorf("parse %q: got %+v", tc.args, c)
			}
		})
	}
}

// TestFlagErrors: unknown options, bad values, and CRIU options asking for
// what ctr-cr does not do are usage errors naming the option.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"dump", []string{"--bogus"}, "unknown option --bogus"},
		{"dump", []string{"-x"}, "unknown option -x"},
		{"dump", []string{"-t", "x"}, "-t"},
		{"dump", []string{"--network-lock", "iptables"}, "--network-lock iptables: not supported"},
		{"dump", []string{"--network-lock=skip"}, "--network-lock skip: not supported"},
		{"dump", []string{"--manage-cgroups"}, "--manage-cgroups=soft: not supported"},
		{"dump", []string{"--manage-cgroups=full"}, "--manage-cgroups=full: not supported"},
		{"dump", []string{"-v9"}, "verbosity"},
		{"dump", []string{"--shell-job=yes please"}, "takes no value"},
		{"restore", []string{"--manage-cgroups=soft"}, "--manage-cgroups=soft: not supported"},
		{"restore", []string{"--bogus"}, "unknown option --bogus"},
		{"restore", []string{"/bundle", "--pidfile"}, "needs an argument"},
		{"restore", []string{"-D", "/img", "--id", "x"}, "--id: only for a container"},
		{"restore", []string{"-D", "/img", "--console-socket", "/s"}, "--console-socket: only for a container"},
	} {
		t.Run(strings.Join(append([]string{tc.cmd}, tc.args...), " "), func(t *testing.T) {
			var err error
			switch tc.cmd {
			case "dump":
				var c dumpConfig
				if _, err = parseOptions("dump", dumpSynopsis, dumpOptions(&c), tc.args, nil); err == nil {
					err = c.criu.check(dumpSynopsis)
				}
			case "restore":
				var c restoreConfig
				if _, err = parseOptions("restore", restoreSynopsis, restoreOptions(&c), tc.args, nil); err == nil {
					err = c.criu.check(restoreSynopsis)
				}
				if err == nil && c.dir != "" {
					err = c.containerOnly()
				}
			}
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestFlagHelp: -h and --help print the options (every spelling) and
// return errHelp.
func TestFlagHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help", "-help"} {
		var c restoreConfig
		var out bytes.Buffer
		_, err := parseOptions("restore", restoreSynopsis, restoreOptions(&c), []string{h}, &out)
		if !errors.Is(err, errHelp) {
			t.Fatalf("%s: got %v, want errHelp", h, err)
		}
		for _, want := range []string{"usage: ctr-cr restore", "--restore-detached", "--pid-file, --pidfile", "-o, --log-file FILE", "--tcp-close", "--skip-in-flight", "refused"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: help lacks %q:\n%s", h, want, out.String())
			}
		}
	}
}

// TestExpandShort: getopt clusters become words Go's flag package knows;
// defined flags, values and positional arguments are left alone.
func TestExpandShort(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var b bool
	var s string
	var n int
	fs.Var(boolValue{&b}, "j", "")
	fs.Var(boolValue{&b}, "R", "")
	fs.Var(stringValue{&s}, "o", "")
	fs.Var(stringValue{&s}, "log-file", "")
	fs.Var(&levelValue{&n}, "v", "")
	for _, tc := range []struct{ in, want string }{
		{"-vvv", "-v -v -v"},
		{"-v4", "-v=4"},
		{"-jR", "-j -R"},
		{"-jo out.log", "-j -o out.log"},
		{"-oout.log", "-o=out.log"},
		{"-o -vv", "-o -vv"},
		{"--log-file -x", "--log-file -x"},
		{"-jx", "-jx"},
		{"-j BUNDLE -vv", "-j -v -v -- BUNDLE"},
		{"A -j B", "-j -- A B"},
		{"-- -vv", "-- -vv"},
		{"-j -- -vv x", "-j -- -vv x"},
		{"-o - x", "-o - -- x"},
		{"--vv", "--vv"},
		{"-", "-- -"},
		{"x -o", "-o"},
		{"x -jo", "-j -o"},
	} {
		got := strings.Join(expandShort(fs, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("expandShort(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestInWorkDir: relative log and pid files go to the work dir, by
// default the image dir, as CRIU's.
func TestInWorkDir(t *testing.T) {
	c := logConfig{}
	if got := c.inWorkDir("/img", "dump.log"); got != "/img/dump.log" {
		t.Errorf("got %q", got)
	}
	if got := c.inWorkDir("/img", "/abs.log"); got != "/abs.log" {
		t.Errorf("got %q", got)
	}
	c.workDir = "/w"
	if got := c.inWorkDir("/img", "sub/p"); got != "/w/sub/p" {
		t.Errorf("got %q", got)
	}
}
