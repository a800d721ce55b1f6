package tests

// Signed images (dump --sign-key, restore --verify-key; core/imagesig).

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// signingKeys makes a key pair with ctr-cr keygen and returns the private
// and public key files.
func signingKeys(t *testing.T, name string) (key, pub string) {
	t.Helper()
	prefix := filepath.Join(t.TempDir(), name)
	if _, stderr, err := ctrcr(t, "keygen", "--out", prefix); err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	return prefix + ".key", prefix + ".pub"
}

// TestCR_SignedImage: b_brk dumped with --sign-key and restored with
// --verify-key, twice (the last restore in the foreground); every image
// holds image.sig.
func TestCR_SignedImage(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	key, pub := signingKeys(t, "signer")
	runCase(t, Case{Name: "b_brk_signed", Src: "b_brk.c",
		DumpArgs: []string{"--sign-key", key}, RestoreArgs: []string{"--verify-key", pub},
		Verify: func(t *testing.T, r *Run) {
			for _, img := range r.Images {
				if _, err := os.Stat(filepath.Join(img, "image.sig")); err != nil {
					t.Errorf("signed image %s: %v", img, err)
				}
			}
		}})
}

// TestNegative_SignedImageRefused: a signed image with a byte changed in a
// file, without its image.sig, or checked against another key is refused
// by restore --verify-key with a message naming the problem, and nothing
// runs afterwards; the intact image then restores. A bad --sign-key file
// fails the dump before the process is touched.
func TestNegative_SignedImageRefused(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	key, pub := signingKeys(t, "signer")
	_, otherPub := signingKeys(t, "other")
	r := startCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
	tids, err := listTids(r.Pid)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	pid := strconv.Itoa(r.Pid)

	// a key file that cannot be used: refused before the dump starts
	open := filepath.Join(t.TempDir(), "open.key")
	if b, err := os.ReadFile(key); err != nil || os.WriteFile(open, b, 0o644) != nil || os.Chmod(open, 0o644) != nil {
		t.Fatalf("copying the key: %v", err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", pid, "-D", img, "--sign-key", open)
	requireExitCode(t, err, stderr, 1)
	if !strings.Contains(stderr, "--sign-key") || !strings.Contains(stderr, "too open") {
		t.Errorf("dump with a group-readable key: the error does not say so:\n%s", stderr)
	}
	requireRunningUntraced(t, r.Pid)

	if _, stderr, err := ctrcr(t, "dump", "-t", pid, "-D", img, "--sign-key", key); err != nil {
		t.Fatalf("dump: %v\n%s", err, stderr)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatalf("after dump: %v", err)
	}
	for _, c := range []struct {
		name, file, verifyKey, want string
		damage                      func(path string) error
	}{
		{"core", "core-" + pid + ".img", pub, "differs from what was signed", flipBit},
		{"inventory", "inventory.img", pub, "differs from what was signed", flipBit},
		{"pages", pagesFile(t, img, r.Pid), pub, "differs from what was signed", flipBit},
		{"unsigned", "image.sig", pub, "not signed", os.Remove},
		{"wrong-key", "image.sig", otherPub, "signature does not verify", func(string) error { return nil }},
		{"private-key-given", "image.sig", key, "public half", func(string) error { return nil }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "img")
			if err := copyDir(img, dir); err != nil {
				t.Fatal(err)
			}
			if err := c.damage(filepath.Join(dir, c.file)); err != nil {
				t.Fatalf("damaging %s: %v", c.file, err)
			}
			_, stderr, err := ctrcr(t, "restore", "-D", dir, "-d", "--verify-key", c.verifyKey)
			requireFailed(t, err, stderr)
			requireNoPanic(t, stderr)
			if !strings.Contains(stderr, c.want) || !strings.Contains(stderr, c.file) && c.file != "image.sig" {
				t.Errorf("restore error does not say %q naming %s:\n%s", c.want, c.file, stderr)
			}
			requireNothingLeft(t, r)
		})
	}

	// The intact image verifies and restores; the case passes.
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d", "--verify-key", pub); err != nil {
		t.Fatalf("restore of the intact image: %v\n%s", err, stderr)
	}
	if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
		t.Fatalf("after restore -d: %v", err)
	}
	finishChild(t, r)
}
