package tests

// Real programs dumped and restored mid-flight as trees: a shell pipeline,
// tar and make, whose results must equal an uninterrupted run's.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// ---------------------------------------------------------------------------
// Real programs.

// TestTree_Pipeline: sh -c 'producer | gzip -1 | sha256sum > sum' dumped
// and restored mid-flight (the producer paces itself and never writes its
// last MiB before go); the sum must equal an uninterrupted run's.
func TestTree_Pipeline(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "sh", "gzip", "sha256sum")
	const mib = "32"
	prod := buildCase(t, "t_producer.c", nil)
	t.Cleanup(func() { killRunning(prod) })

	ref, err := exec.Command("/bin/sh", "-c", prod+" - "+mib+" | gzip -1 | sha256sum").Output()
	if err != nil {
		t.Fatalf("reference pipeline: %v", err)
	}
	comm := filepath.Base(prod)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	sum := ""
	tr := startTree(t, Case{
		Name: "Pipeline",
		Cmd:  []string{"/bin/sh", "-c", prod + " {WORKDIR} " + mib + " | gzip -1 | sha256sum > {WORKDIR}/sum"},
	}, treeOpts{
		exact: true,
		settle: func(t *testing.T, tr *treeRun) {
			sum = filepath.Join(tr.Dir, "sum")
			waitTreeShape(t, tr, []string{"sh", comm, "gzip", "sha256sum"})
		},
		beforeDump: func(t *testing.T, tr *treeRun, cycle int) {
			if fi, err := os.Stat(sum); err != nil || fi.Size() != 0 {
				tr.fatalf("", "cycle %d: the pipeline is not mid-flight: sum %v %v", cycle, fi, err)
			}
		},
	})
	t.Logf("fds before the first dump:\n  %s", strings.Join(tr.fdLog, "\n  "))
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, realTimeout)
	got, err := os.ReadFile(sum)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ref) {
		t.Fatalf("pipeline result %q, uninterrupted run %q", got, ref)
	}
}

// waitTreeShape waits until the root's comm is want[0] and the tree has
// processes with each of the other comms in want (a shell may stand between
// a program and the one it runs).
func waitTreeShape(t *testing.T, tr *treeRun, want []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var comms []string
	for {
		procs, err := walkTree(tr.root)
		if err != nil {
			tr.fatalf("", "tree of %d: %v", tr.root, err)
		}
		comms = comms[:0]
		for _, p := range procs {
			comms = append(comms, p.Comm)
		}
		ok := comms[0] == want[0]
		for _, w := range want[1:] {
			ok = ok && slices.Contains(comms[1:], w)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tr.fatalf("", "the tree is %v, want %v", comms, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// makeDataTree writes a deterministic directory tree under dir: nfiles
// files of varied sizes (some of several MiB) in nested directories, about
// total bytes of compressible text, fixed modes.
func makeDataTree(t *testing.T, dir string, nfiles int, total int64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("alpha beta gamma delta process tree session group zombie pipe socket fifo memory page signal thread")
	sizes := make([]int64, nfiles)
	var sum int64
	for i := range sizes {
		if i%100 == 7 { // a few large files
			sizes[i] = 1<<20 + rng.Int64N(3<<20)
		} else {
			sizes[i] = rng.Int64N(24 << 10)
		}
		sum += sizes[i]
	}
	for i := range sizes { // scale to the total
		sizes[i] = sizes[i] * total / sum
	}
	buf := make([]byte, 0, 4<<20)
	for i, size := range sizes {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%40), fmt.Sprintf("e%d", i%7))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		buf = buf[:0]
		for int64(len(buf)) < size {
			buf = append(buf, words[rng.IntN(len(words))]...)
			if rng.IntN(10) == 0 {
				buf = strconv.AppendUint(append(buf, ' '), rng.Uint64(), 36)
			}
			buf = append(buf, " \n"[rng.IntN(2)])
		}
		name := filepath.Join(sub, fmt.Sprintf("file%04d.txt", i))
		if err := os.WriteFile(name, buf[:size], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// modes fixed whatever the umask
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tarArgs is a reproducible "tar czf ARCHIVE -C DIR .".
func tarArgs(archive, dir string) []string {
	return []string{"tar", "--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0", "--numeric-owner",
		"--format=gnu", "-czf", archive, "-C", dir, "."}
}

// TestTree_Tar: tar czf of a 2000-file, 60 MiB tree (tar, the sh it runs
// gzip with, gzip) dumped and restored mid-archive; the archive must be
// byte-identical to an uninterrupted run's. tar paces itself with
// --checkpoint-action=sleep=1 every 6 MiB so that it is still archiving at
// each dump.
func TestTree_Tar(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "sh", "tar", "gzip", "cp")
	src := filepath.Join(t.TempDir(), "src")
	makeDataTree(t, src, 2000, 60<<20)

	args := tarArgs("{WORKDIR}/out.tgz", "{WORKDIR}/tree")
	args = append(args[:1], append([]string{"--checkpoint=600", "--checkpoint-action=sleep=1"}, args[1:]...)...)
	script := "cp -a " + src + " {WORKDIR}/tree && echo ready && exec " + shellJoin(args)
	var out string
	tr := startTree(t, Case{Name: "Tar", Cmd: []string{"/bin/sh", "-c", script}, ReadyTimeout: 60 * time.Second}, treeOpts{
		exact: true,
		settle: func(t *testing.T, tr *treeRun) {
			out = filepath.Join(tr.Dir, "out.tgz")
			waitTreeShape(t, tr, []string{"tar", "gzip"})
			deadline := time.Now().Add(30 * time.Second)
			for {
				if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
					return
				}
				if time.Now().After(deadline) {
					tr.fatalf("", "%s stays empty", out)
				}
				time.Sleep(5 * time.Millisecond)
			}
		},
		beforeDump: func(t *testing.T, tr *treeRun, cycle int) {
			fi, err := os.Stat(out)
			if err != nil {
				tr.fatalf("", "cycle %d: %v", cycle, err)
			}
			t.Logf("cycle %d: dumping tar with %d bytes of archive written", cycle, fi.Size())
		},
	})
	t.Logf("fds before the first dump:\n  %s", strings.Join(tr.fdLog, "\n  "))
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, realTimeout)

	ref := filepath.Join(tr.Dir, "ref.tgz")
	if b, err := exec.Command(tarArgs(ref, filepath.Join(tr.Dir, "tree"))[0], tarArgs(ref, filepath.Join(tr.Dir, "tree"))[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("reference tar: %v\n%s", err, b)
	}
	requireSameFile(t, out, ref)
}

// shellJoin quotes args for sh -c.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// requireSameFile fails unless the two files have the same bytes.
func requireSameFile(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		i := 0
		for i < len(a) && i < len(b) && a[i] == b[i] {
			i++
		}
		t.Fatalf("%s (%d bytes, sha256 %x) differs from the uninterrupted run's %s (%d bytes, sha256 %x) at byte %d",
			got, len(a), sha256.Sum256(a), want, len(b), sha256.Sum256(b), i)
	}
}

// makeProject writes a small C project: nsrc files each with a large
// generated function (slow enough to compile that make -j2 is mid-build
// at each dump), a main calling them all, and a Makefile building the
// objects and linking prog reproducibly.
func makeProject(t *testing.T, dir string, nsrc int) []string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var objs []string
	var mainC strings.Builder
	mainC.WriteString("#include <stdio.h>\n")
	for i := 0; i < nsrc; i++ {
		var b strings.Builder
		fmt.Fprintf(&b, "unsigned long f%02d(unsigned long x)\n{\n\tunsigned long a = x, b = x ^ %#x, c = %d;\n", i, i*2654435761, i)
		for j := 0; j < 700; j++ {
			switch j % 4 {
			case 0:
				fmt.Fprintf(&b, "\ta = a * %dUL + (b >> %d);\n", 2*j+1, j%13+1)
			case 1:
				fmt.Fprintf(&b, "\tif ((a ^ c) & %#x) b += a << %d; else c ^= b + %d;\n", 1<<(j%16), j%7+1, j)
			case 2:
				fmt.Fprintf(&b, "\tc = (c + a) * %dUL ^ (b >> %d);\n", 2*j+3, j%11+1)
			default:
				fmt.Fprintf(&b, "\tfor (int k = 0; k < %d; k++) a += (b ^ k) * %dUL;\n", j%5+2, j)
			}
		}
		b.WriteString("\treturn a ^ b ^ c;\n}\n")
		name := fmt.Sprintf("f%02d", i)
		if err := os.WriteFile(filepath.Join(dir, name+".c"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, name+".o")
		fmt.Fprintf(&mainC, "unsigned long %s(unsigned long);\n", name)
	}
	mainC.WriteString("int main(void)\n{\n\tunsigned long s = 1;\n")
	for i := 0; i < nsrc; i++ {
		fmt.Fprintf(&mainC, "\ts = f%02d(s) + %d;\n", i, i)
	}
	mainC.WriteString("\tprintf(\"%lx\\n\", s);\n\treturn 0;\n}\n")
	if err := os.WriteFile(filepath.Join(dir, "main.c"), []byte(mainC.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	objs = append(objs, "main.o")
	mk := "CC = gcc\n" +
		"CFLAGS = -O2 -g0 -fno-ident -ffile-prefix-map=$(CURDIR)=.\n" +
		"OBJS = " + strings.Join(objs, " ") + "\n" +
		"prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n" +
		"%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestTree_Make: make -j2 of a 30-file C project (make, gcc, cc1, as, ...)
// dumped and restored mid-build; the objects and the program must be
// byte-identical to a clean build's, and the program must run. The tree
// changes all the time (make starts compilers, which end), so only the root
// is compared and awaited after each restore; after each dump every process
// seen in the tree, and any zombie of its session reparented to us, is
// reaped.
func TestTree_Make(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "sh", "make", "gcc", "as", "ld", "cp")
	const nsrc = 30
	src := filepath.Join(t.TempDir(), "proj")
	objs := makeProject(t, src, nsrc)

	countObjs := func(dir string) int {
		n := 0
		for _, o := range objs {
			if _, err := os.Stat(filepath.Join(dir, o)); err == nil {
				n++
			}
		}
		return n
	}
	script := "cp -a " + src + " {WORKDIR}/proj && mkdir {WORKDIR}/tmp && export TMPDIR={WORKDIR}/tmp && echo ready && exec make -j2 -C {WORKDIR}/proj"
	var proj string
	tr := startTree(t, Case{Name: "Make", Cmd: []string{"/bin/sh", "-c", script}, ReadyTimeout: 60 * time.Second}, treeOpts{
		settle: func(t *testing.T, tr *treeRun) {
			proj = filepath.Join(tr.Dir, "proj")
			deadline := time.Now().Add(60 * time.Second)
			for countObjs(proj) == 0 {
				if time.Now().After(deadline) {
					tr.fatalf("", "no object file after 60 s")
				}
				time.Sleep(5 * time.Millisecond)
			}
		},
		beforeDump: func(t *testing.T, tr *treeRun, cycle int) {
			n := countObjs(proj)
			procs, _ := walkTree(tr.root)
			var comms []string
			for _, p := range procs {
				comms = append(comms, p.Comm)
			}
			t.Logf("cycle %d: dumping make with %d/%d objects built, tree %v", cycle, n, len(objs), comms)
			if n == len(objs) {
				tr.fatalf("", "cycle %d: the build is not mid-way any more (all %d objects exist)", cycle, n)
			}
		},
	})
	t.Logf("fds before the first dump:\n  %s", strings.Join(tr.fdLog, "\n  "))
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, realTimeout)

	ref := filepath.Join(tr.Dir, "ref")
	if b, err := exec.Command("cp", "-a", src, ref).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, b)
	}
	cmd := exec.Command("make", "-j2", "-C", ref)
	cmd.Env = append(os.Environ(), "TMPDIR="+filepath.Join(tr.Dir, "tmp"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference build: %v\n%s", err, b)
	}
	for _, f := range append(slices.Clone(objs), "prog") {
		requireSameFile(t, filepath.Join(proj, f), filepath.Join(ref, f))
	}
	got, err := exec.Command(filepath.Join(proj, "prog")).Output()
	if err != nil {
		t.Fatalf("the built program: %v", err)
	}
	want, err := exec.Command(filepath.Join(ref, "prog")).Output()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the built program prints %q, the reference %q (%v)", got, want, err)
	}
}
