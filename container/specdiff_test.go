package container

import (
	"strings"
	"testing"
)

func TestCompareSpecs(t *testing.T) {
	base := `{"ociVersion":"1.0.2","process":{"args":["sh","-c","x"],"env":["A=1"]},"root":{"path":"rootfs"},
		"hostname":"box","mounts":[{"destination":"/data","source":"/srv/a","type":"bind","options":["rbind"]}],
		"annotations":{"k":"v"},"linux":{"cgroupsPath":"/a","namespaces":[{"type":"network","path":"/run/netns/a"},{"type":"pid"}],
		"resources":{"memory":{"limit":1000}}}}`
	for _, tc := range []struct {
		name, cur, want string
	}{
		{"same", base, ""},
		{"annotations", strings.Replace(base, `"k":"v"`, `"k":"w","n":"1"`, 1), ""},
		{"root path", strings.Replace(base, `"path":"rootfs"`, `"path":"/other/rootfs"`, 1), ""},
		{"bind source", strings.Replace(base, `"/srv/a"`, `"/srv/b"`, 1), ""},
		{"cgroups path", strings.Replace(base, `"cgroupsPath":"/a"`, `"cgroupsPath":"/b"`, 1), ""},
		{"netns path", strings.Replace(base, `/run/netns/a`, `/run/netns/b`, 1), ""},
		{"hooks added", strings.Replace(base, `"hostname"`, `"hooks":{"prestart":[{"path":"/bin/true"}]},"hostname"`, 1), ""},
		{"args", strings.Replace(base, `"-c","x"`, `"-c","y"`, 1), "process.args.2 (was \"x\", now \"y\")"},
		{"hostname", strings.Replace(base, `"box"`, `"other"`, 1), "hostname"},
		{"env added", strings.Replace(base, `["A=1"]`, `["A=1","B=2"]`, 1), "process.env"},
		{"memory", strings.Replace(base, `"limit":1000`, `"limit":2000`, 1), "linux.resources.memory.limit"},
		{"mount dest", strings.Replace(base, `"/data"`, `"/data2"`, 1), "mounts.0.destination"},
		{"same number spelt otherwise", strings.Replace(base, `"limit":1000`, `"limit":1000.0`, 1), ""},
		{"memory above 2^53", strings.Replace(base, `"limit":1000`, `"limit":9007199254740993`, 1), "linux.resources.memory.limit"},
		{"field removed", strings.Replace(base, `"hostname":"box",`, ``, 1), "hostname (was \"box\", now absent)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CompareSpecs([]byte(base), []byte(tc.cur))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to name %q", err, tc.want)
			}
		})
	}
	big := strings.Replace(base, `"limit":1000`, `"limit":9007199254740992`, 1)
	if err := CompareSpecs([]byte(big), []byte(strings.Replace(big, "9007199254740992", "9007199254740993", 1))); err == nil {
		t.Errorf("a memory limit changed by one above 2^53 was taken as unchanged")
	}
	if err := CompareSpecs([]byte("{"), []byte(base)); err == nil || !strings.Contains(err.Error(), "spec.dump") {
		t.Errorf("bad spec.dump: %v", err)
	}
}
