// Package mountinfo is the one parser of /proc/PID/mountinfo (proc(5)) for
// the mount tree (mounts), the cgroup hierarchies (cgroup) and the file
// handles of inotify and fanotify marks (core/files). It reads from an
// io.Reader, so that the format is tested on fixed text, and takes a Filter
// that keeps or drops each mount and can stop the read early, in the style
// of moby/sys/mountinfo (this is our own code).
//
// The parser is strict: a line that does not follow proc(5) is an error
// naming its line number, never skipped, since a mount left out silently
// would be a mount not carried.
package mountinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrMalformed is returned (wrapped) for a mountinfo line that cannot be parsed.
var ErrMalformed = errors.New("malformed mountinfo line")

// Info is one line of /proc/PID/mountinfo (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//
// (1) mount ID, (2) parent ID, (3) major:minor of the filesystem, (4) root of
// the mount inside its filesystem, (5) mount point relative to the reading
// process's root, (6) per-mount options, (7) zero or more optional fields,
// (8) separator, (9) filesystem type, (10) source, (11) superblock options.
// Root, MountPoint and Source have their octal escapes (\040 for a space,
// \011, \012, \134) decoded.
type Info struct {
	ID           int    `json:"id"`
	Parent       int    `json:"parent"`
	Major        uint32 `json:"major"`
	Minor        uint32 `json:"minor"`
	Root         string `json:"root"`
	MountPoint   string `json:"mount_point"`
	Options      string `json:"options"`
	Optional     string `json:"optional,omitempty"` // raw optional fields, space separated
	FSType       string `json:"fstype"`
	Source       string `json:"source"`
	SuperOptions string `json:"super_options"`

	// Decoded optional fields; 0 / false when absent.
	Shared        int  `json:"shared,omitempty"`         // shared:N peer group
	Master        int  `json:"master,omitempty"`         // master:N, a slave of peer group N
	PropagateFrom int  `json:"propagate_from,omitempty"` // propagate_from:N
	Unbindable    bool `json:"unbindable,omitempty"`
}

// Dev is the filesystem's device number (st_dev of its files).
func (i *Info) Dev() uint64 { return unix.Mkdev(i.Major, i.Minor) }

// maxLine bounds one mountinfo line: two paths of at most PATH_MAX, escaped
// x4, plus a source and superblock options that can be long (an overlay's
// layer list), so 1 MiB.
const maxLine = 1 << 20

// Filter decides for each parsed mount whether Parse leaves it out (skip)
// and whether Parse stops after it (stop). A nil Filter keeps every mount.
type Filter func(*Info) (skip, stop bool)

// FSType keeps the mounts whose filesystem type is one of types.
func FSType(types ...string) Filter {
	return func(i *Info) (bool, bool) {
		for _, t := range types {
			if i.FSType == t {
				return false, false
			}
		}
		return true, false
	}
}

// ID keeps the mount with the given mount ID and stops there.
func ID(id int) Filter {
	return func(i *Info) (bool, bool) {
		if i.ID == id {
			return false, true
		}
		return true, false
	}
}

// Read opens path (/proc/PID/mountinfo, /proc/self/mountinfo or
// /proc/thread-self/mountinfo: the last is the calling thread's mount
// namespace, the one to read on a thread that joined another) and parses it
// with Parse.
func Read(path string, f Filter) ([]Info, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	infos, err := Parse(fh, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return infos, nil
}

// Self reads /proc/self/mountinfo: the mounts of our process's mount
// namespace (its thread group leader's).
func Self(f Filter) ([]Info, error) { return Read("/proc/self/mountinfo", f) }

// ForPid reads /proc/PID/mountinfo: the mounts as pid sees them (relative
// to its root).
func ForPid(pid int, f Filter) ([]Info, error) {
	return Read("/proc/"+strconv.Itoa(pid)+"/mountinfo", f)
}

// Parse reads mountinfo lines from r in order and returns those f keeps.
// Empty lines are skipped; any other line that does not follow proc(5) is
// an error naming its line number (also one f would drop). Unknown optional
// fields are kept in Info.Optional and otherwise ignored, so that newer
// kernels still parse.
func Parse(r io.Reader, f Filter) ([]Info, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	var out []Info
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		info, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		skip, stop := false, false
		if f != nil {
			skip, stop = f(&info)
		}
		if !skip {
			out = append(out, info)
		}
		if stop {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: read line %d: %w", n+1, err)
	}
	return out, nil
}

func parseLine(line string) (Info, error) {
	var info Info
	f := strings.Split(line, " ")
	if len(f) < 10 {
		return info, fmt.Errorf("%w: %d fields, want at least 10: %q", ErrMalformed, len(f), line)
	}
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 {
		return info, fmt.Errorf("%w: no \" - \" separator: %q", ErrMalformed, line)
	}
	if len(f)-sep-1 != 3 {
		return info, fmt.Errorf("%w: %d fields after the separator, want 3: %q", ErrMalformed, len(f)-sep-1, line)
	}
	var err error
	if info.ID, err = strconv.Atoi(f[0]); err != nil || info.ID < 0 {
		return info, fmt.Errorf("%w: mount ID %q", ErrMalformed, f[0])
	}
	if info.Parent, err = strconv.Atoi(f[1]); err != nil || info.Parent < 0 {
		return info, fmt.Errorf("%w: parent ID %q", ErrMalformed, f[1])
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return info, fmt.Errorf("%w: major:minor %q", ErrMalformed, f[2])
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return info, fmt.Errorf("%w: major:minor %q", ErrMalformed, f[2])
	}
	info.Major, info.Minor = uint32(ma), uint32(mi)
	if info.Root, err = Unescape(f[3]); err != nil {
		return info, fmt.Errorf("%w: root: %w", ErrMalformed, err)
	}
	if info.MountPoint, err = Unescape(f[4]); err != nil {
		return info, fmt.Errorf("%w: mount point: %w", ErrMalformed, err)
	}
	if !strings.HasPrefix(info.MountPoint, "/") {
		return info, fmt.Errorf("%w: mount point %q is not absolute", ErrMalformed, info.MountPoint)
	}
	if f[5] == "" {
		return info, fmt.Errorf("%w: empty mount options", ErrMalformed)
	}
	info.Options = f[5]
	opt := f[6:sep]
	info.Optional = strings.Join(opt, " ")
	for _, o := range opt {
		if o == "" {
			return info, fmt.Errorf("%w: empty optional field", ErrMalformed)
		}
		tag, val, hasVal := strings.Cut(o, ":")
		num := func() (int, error) {
			v, err := strconv.Atoi(val)
			if !hasVal || err != nil || v <= 0 {
				return 0, fmt.Errorf("%w: optional field %q", ErrMalformed, o)
			}
			return v, nil
		}
		switch tag {
		case "shared":
			if info.Shared, err = num(); err != nil {
				return info, err
			}
		case "master":
			if info.Master, err = num(); err != nil {
				return info, err
			}
		case "propagate_from":
			if info.PropagateFrom, err = num(); err != nil {
				return info, err
			}
		case "unbindable":
			info.Unbindable = true
		}
	}
	info.FSType = f[sep+1]
	if info.FSType == "" {
		return info, fmt.Errorf("%w: empty filesystem type", ErrMalformed)
	}
	if info.Source, err = Unescape(f[sep+2]); err != nil {
		return info, fmt.Errorf("%w: source: %w", ErrMalformed, err)
	}
	info.SuperOptions = f[sep+3]
	return info, nil
}

// Unescape decodes the octal escapes (\NNN) the kernel writes in mountinfo
// paths for space, tab, newline and backslash. A backslash not followed by
// three octal digits is an error.
func Unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+3 >= len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v := 0
		for j := 1; j <= 3; j++ {
			d := s[i+j]
			if d < '0' || d > '7' {
				return "", fmt.Errorf("bad escape %q in %q", s[i:i+4], s)
			}
			v = v*8 + int(d-'0')
		}
		if v > 255 {
			return "", fmt.Errorf("bad escape %q in %q", s[i:i+4], s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// HasOption reports whether the comma-separated option list opts holds name
// (an exact "name" or "name=value" entry).
func HasOption(opts, name string) bool {
	_, ok := OptionValue(opts, name)
	return ok
}

// OptionValue returns the value of name in the comma-separated option list
// opts ("" for a flag without value) and whether it is present.
func OptionValue(opts, name string) (string, bool) {
	for _, o := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(o, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}
