package main

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ctr-cr/ctr-cr/container"
	"github.com/ctr-cr/ctr-cr/core/dump"
)

// The command lines below are what the platforms sent to a runc wrapper
// here (podman 4.3.1 with conmon 2.1.6, Debian 12) and what containerd
// 1.6's runc shim builds with go-runc (its argument order: global options,
// command, options, id).
const (
	podU  = "/var/lib/containers/storage/overlay-containers/5406c7/userdata"
	podR  = "/run/containers/storage/overlay-containers/5406c7/userdata"
	ctrdB = "/run/containerd/io.containerd.runtime.v2.task/default/c1"
)

func TestPlatform_RuncArgv(t *testing.T) {
	type want struct {
		cmd      string
		global   runcGlobal
		leave    bool
		tcp      bool
		locks    bool
		image    string
		work     string
		bundle   string
		pidFile  string
		console  string
		detach   bool
		noReaper bool
		noPivot  bool
		forward  []string
	}
	for _, tc := range []struct {
		name string
		argv string
		want want
	}{
		{"podman checkpoint", "checkpoint --image-path " + podU + "/checkpoint --work-path " + podU + " 5406c7",
			want{cmd: "checkpoint", global: runcGlobal{logFormat: "text"}, image: podU + "/checkpoint", work: podU}},
		{"podman checkpoint --leave-running --tcp-established --file-locks",
			"checkpoint --image-path " + podU + "/checkpoint --work-path " + podU + " --leave-running --tcp-established --file-locks --leave-running 5406c7",
			want{cmd: "checkpoint", global: runcGlobal{logFormat: "text"}, image: podU + "/checkpoint", work: podU, leave: true, tcp: true, locks: true}},
		{"podman restore (conmon)",
			"--log-format=json --log " + podR + "/oci-log restore --bundle " + podU + " --pid-file " + podR + "/pidfile --detach --image-path " + podU + "/checkpoint --work-path " + podU + " 5406c7",
			want{cmd: "restore", global: runcGlobal{log: podR + "/oci-log", logFormat: "json"}, image: podU + "/checkpoint", work: podU,
				bundle: podU, pidFile: podR + "/pidfile", detach: true, forward: []string{"--log", podR + "/oci-log", "--log-format", "json"}}},
		{"podman restore -t --tcp-established (conmon)",
			"--log-format=json --log " + podR + "/oci-log restore --bundle " + podU + " --pid-file " + podR + "/pidfile --detach --image-path " + podU + "/checkpoint --work-path " + podU + " --tcp-established --console-socket /tmp/conmon-term.BP29Z3 5406c7",
			want{cmd: "restore", global: runcGlobal{log: podR + "/oci-log", logFormat: "json"}, image: podU + "/checkpoint", work: podU,
				bundle: podU, pidFile: podR + "/pidfile", detach: true, tcp: true, console: "/tmp/conmon-term.BP29Z3",
				forward: []string{"--log", podR + "/oci-log", "--log-format", "json"}}},
		{"containerd checkpoint (go-runc)",
			"--root /run/containerd/runc/default --log " + ctrdB + "/log.json --log-format json checkpoint --image-path /var/lib/containerd/cp --work-path " + ctrdB + "/criu-work --leave-running --file-locks c1",
			want{cmd: "checkpoint", global: runcGlobal{root: "/run/containerd/runc/default", log: ctrdB + "/log.json", logFormat: "json"},
				image: "/var/lib/containerd/cp", work: ctrdB + "/criu-work", leave: true, locks: true,
				forward: []string{"--log", ctrdB + "/log.json", "--log-format", "json"}}},
		{"containerd restore (go-runc, single-dash -no-subreaper)",
			"--root /run/containerd/runc/default --log " + ctrdB + "/log.json --log-format json --systemd-cgroup restore --image-path /var/lib/containerd/cp --work-path " + ctrdB + "/criu-work --detach --pid-file " + ctrdB + "/init.pid -no-subreaper --no-pivot --console-socket /tmp/pty1 --bundle " + ctrdB + " c1",
			want{cmd: "restore", global: runcGlobal{root: "/run/containerd/runc/default", log: ctrdB + "/log.json", logFormat: "json", systemdCgroup: true},
				image: "/var/lib/containerd/cp", work: ctrdB + "/criu-work", detach: true, pidFile: ctrdB + "/init.pid", noReaper: true, noPivot: true,
				console: "/tmp/pty1", bundle: ctrdB,
				forward: []string{"--systemd-cgroup", "--log", ctrdB + "/log.json", "--log-format", "json"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, cmd, rest, err := parseRuncGlobal(strings.Fields(tc.argv))
			if err != nil || cmd != tc.want.cmd {
				t.Fatalf("global: cmd %q err %v, want %q", cmd, err, tc.want.cmd)
			}
			if *g != tc.want.global {
				t.Errorf("global options %+v, want %+v", *g, tc.want.global)
			}
			if f := g.forward(); !reflect.DeepEqual(f, tc.want.forward) {
				t.Errorf("forwarded %q, want %q", f, tc.want.forward)
			}
			var common runcCommon
			var got want
			got.cmd, got.global, got.forward = cmd, *g, g.forward()
			if cmd == "checkpoint" {
				c, err := parseRuncCheckpoint(rest, io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				common, got.leave = c.runcCommon, c.leaveRunning
			} else {
				c, err := parseRuncRestore(rest, io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				common = c.runcCommon
				got.bundle, got.pidFile, got.console = c.bundle, c.pidFile, c.consoleSocket
				got.detach, got.noReaper, got.noPivot = c.detach, c.noSubreaper, c.noPivot
				if c.noPivot != (len(c.createArgs()) == 1) {
					t.Errorf("--no-pivot: create gets %q", c.createArgs())
				}
			}
			got.tcp, got.locks, got.image, got.work = common.tcpEstablished, common.fileLocks, common.paths.image, common.paths.work
			if common.id != strings.Fields(tc.argv)[len(strings.Fields(tc.argv))-1] {
				t.Errorf("id %q", common.id)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parsed\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// Everything but checkpoint and restore goes to the real runc untouched;
// the probe `checkpoint --help` exits 0; what ctr-cr cannot do is refused
// by name.
func TestPlatform_RuncArgvRefusals(t *testing.T) {
	for _, argv := range []string{
		"--log-format=json --log /x create --bundle /b --pid-file /p id", "start id", "state id",
		"kill id 15", "delete --force id", "--version", "--help", "features", "",
	} {
		if _, cmd, _, _ := parseRuncGlobal(strings.Fields(argv)); cmd == "checkpoint" || cmd == "restore" {
			t.Errorf("%q: taken as %s", argv, cmd)
		}
	}
	var out strings.Builder
	if _, err := parseRuncCheckpoint([]string{"--help"}, &out); !errors.Is(err, errHelp) || !strings.Contains(out.String(), "--image-path") {
		t.Errorf("checkpoint --help: %v %q", err, out.String())
	}
	if _, err := parseRuncRestore([]string{"-h"}, &out); !errors.Is(err, errHelp) {
		t.Errorf("restore -h: %v", err)
	}
	for _, tc := range []struct{ argv, flag string }{
		{"--lazy-pages id", "--lazy-pages"},
		{"--page-server 1.2.3.4:5 id", "--page-server"}, {"--status-fd 5 id", "--status-fd"}, {"--auto-dedup id", "--auto-dedup"},
		{"--manage-cgroups-mode strict id", "--manage-cgroups-mode strict"}, {"--empty-ns pid id", "--empty-ns pid"},
		{"--lsm-profile apparmor:x id", "--lsm-profile"}, {"--lsm-mount-context x id", "--lsm-mount-context"}, {"a b", "want one container id"},
	} {
		_, err := parseRuncCheckpoint(strings.Fields(tc.argv), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("checkpoint %s: %v, want a refusal naming %s", tc.argv, err, tc.flag)
		}
	}
	for _, tc := range []struct{ argv, flag string }{
		{"--lazy-pages id", "--lazy-pages"}, {"--auto-dedup id", "--auto-dedup"}, {"--manage-cgroups-mode ignore id", "ignore"},
	} {
		if _, err := parseRuncRestore(strings.Fields(tc.argv), io.Discard); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("restore %s: %v, want a refusal naming %s", tc.argv, err, tc.flag)
		}
	}
	c, err := parseRuncCheckpoint(strings.Fields("--empty-ns network --manage-cgroups-mode soft --shell-job --ext-unix-sk id"), io.Discard)
	if err != nil || !c.emptyNet || !c.extUnixSk {
		t.Errorf("accepted options: %+v %v", c, err)
	}
}

// Defaults as runc's: the image in ./checkpoint, the work directory the
// image's, the bundle the current directory.
func TestPlatform_RuncDefaults(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	dir, _ = os.Getwd()
	c, err := parseRuncRestore([]string{"id"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	image, work, err := c.paths.resolve()
	if err != nil || image != filepath.Join(dir, "checkpoint") || work != image || c.bundle != dir {
		t.Errorf("image %q work %q bundle %q (%v), want %s/checkpoint, the same, %s", image, work, c.bundle, err, dir, dir)
	}
	c.paths = runcPaths{image: "img", work: "w"}
	if image, work, _ := c.paths.resolve(); image != filepath.Join(dir, "img") || work != filepath.Join(dir, "w") {
		t.Errorf("relative paths: %q %q", image, work)
	}
}

// The error line a platform reads back from --log: runc's JSON (logrus).
func TestPlatform_RuncLogFormat(t *testing.T) {
	l := string(formatRuncLog("json", "error", `bad "thing"`))
	if !strings.HasPrefix(l, `{"level":"error","msg":"bad \"thing\"","time":"`) || !strings.HasSuffix(l, "\"}\n") {
		t.Errorf("json line %q", l)
	}
	if l := string(formatRuncLog("text", "error", "x")); !strings.Contains(l, `level=error msg="x"`) {
		t.Errorf("text line %q", l)
	}
}

// The real runc is never ctr-cr itself, even through a symlink.
func TestPlatform_RealRunc(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "runc")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CTRCR_RUNC", link)
	if p, err := realRunc(); err == nil || !strings.Contains(err.Error(), "ctr-cr itself") {
		t.Errorf("real runc %q (%v): ctr-cr's own binary taken", p, err)
	}
	t.Setenv("CTRCR_RUNC", "runc")
	if _, err := realRunc(); err == nil {
		t.Error("a relative CTRCR_RUNC accepted")
	}
}

// stats-dump as CRIU writes it: two magics, the length, a StatsEntry whose
// dump entry has every field go-criu requires.
func TestPlatform_StatsDumpFormat(t *testing.T) {
	p := filepath.Join(t.TempDir(), "stats-dump")
	st := &container.CheckpointStats{FreezingMs: 1.5, FrozenMs: 20, Dump: &dump.Stats{MemdumpMs: 3, WriteMs: 4, PagesScanned: 100, PagesWritten: 30}}
	if err := writeDumpStats(p, st); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) < 12 || binary.LittleEndian.Uint32(b) != 0x55105940 || binary.LittleEndian.Uint32(b[4:]) != 0x57093306 || int(binary.LittleEndian.Uint32(b[8:])) != len(b)-12 {
		t.Fatalf("header % x", b[:min(len(b), 12)])
	}
	num, typ, n := protowire.ConsumeTag(b[12:])
	if num != 1 || typ != protowire.BytesType {
		t.Fatalf("StatsEntry field %d type %d", num, typ)
	}
	e, _ := protowire.ConsumeBytes(b[12+n:])
	got := map[protowire.Number]uint64{}
	for len(e) > 0 {
		num, _, n := protowire.ConsumeTag(e)
		v, m := protowire.ConsumeVarint(e[n:])
		got[num] = v
		e = e[n+m:]
	}
	want := map[protowire.Number]uint64{1: 1500, 2: 20000, 3: 3000, 4: 4000, 5: 100, 6: 0, 7: 30, 8: 0, 9: 0, 10: 0, 11: 0, 12: 0, 13: 0, 14: 0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dump_stats_entry %v, want %v", got, want)
	}
}

// criu swrk: VERSION is answered (podman wants at least 3.11), anything
// else refused naming the request.
func TestPlatform_CriuSwrkVersion(t *testing.T) {
	req := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), criuReqVersion)
	resp := swrkResponse(req)
	fields := map[protowire.Number][]byte{}
	var vals = map[protowire.Number]uint64{}
	for len(resp) > 0 {
		num, typ, n := protowire.ConsumeTag(resp)
		resp = resp[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(resp)
			fields[num], resp = v, resp[m:]
			continue
		}
		v, m := protowire.ConsumeVarint(resp)
		vals[num], resp = v, resp[m:]
	}
	if vals[1] != criuReqVersion || vals[2] != 1 || fields[10] == nil {
		t.Fatalf("response %v %v", vals, fields)
	}
	v := fields[10]
	_, _, n := protowire.ConsumeTag(v)
	major, m := protowire.ConsumeVarint(v[n:])
	v = v[n+m:]
	_, _, n = protowire.ConsumeTag(v)
	minor, _ := protowire.ConsumeVarint(v[n:])
	if major*10000+minor*100 < 31100 {
		t.Errorf("version %d.%d below podman's 3.11", major, minor)
	}
	dumpReq := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	if r := swrkResponse(dumpReq); !strings.Contains(string(r), "only the VERSION request") {
		t.Errorf("DUMP request answered %q", r)
	}
}
