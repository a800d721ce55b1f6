package imagesig

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// coveredFiles are the files of the fake image, each covered.
var coveredFiles = []string{"inventory.img", "core-1.img", "pages-1.img", "spec.dump", "container.json", "ctr-cr.json", "tmpfs-0.tar"}

// fakeImage writes a directory with the covered files and a log.
func fakeImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for i, n := range coveredFiles {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(strings.Repeat(n, i+3)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "dump.log"), []byte("log\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func signed(t *testing.T) (string, ed25519.PublicKey) {
	t.Helper()
	dir := fakeImage(t)
	pub, priv := newKey(t)
	if err := Sign(dir, priv); err != nil {
		t.Fatal(err)
	}
	return dir, pub
}

func requireErr(t *testing.T, err, want error, mention string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want an error wrapping %q", err, want)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Fatalf("error %q does not mention %q", err, mention)
	}
}

// TestSignVerify: a signed image verifies; logs (not read by a restore)
// may change; a second Sign replaces image.sig.
func TestSignVerify(t *testing.T) {
	dir, pub := signed(t)
	if err := Verify(dir, pub); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dump.log"), []byte("more log\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dir, pub); err != nil {
		t.Fatalf("a log written after signing: %v", err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, Name))
	for _, n := range coveredFiles {
		if !strings.Contains(string(data), " "+n+"\n") {
			t.Errorf("%s does not list %s:\n%s", Name, n, data)
		}
	}
	pub2, priv2 := newKey(t)
	if err := Sign(dir, priv2); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dir, pub2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, Name+".tmp")); err == nil {
		t.Error("a temporary signature file is left")
	}
}

// TestVerifyTamperedFile: one byte changed in any covered file is refused,
// naming the file.
func TestVerifyTamperedFile(t *testing.T) {
	for _, n := range coveredFiles {
		t.Run(n, func(t *testing.T) {
			dir, pub := signed(t)
			p := filepath.Join(dir, n)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 1
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			requireErr(t, Verify(dir, pub), ErrModified, n)
		})
	}
}

// TestVerifyChangedSet: a covered file added, removed, or replaced by a
// symbolic link to identical contents is refused.
func TestVerifyChangedSet(t *testing.T) {
	t.Run("added", func(t *testing.T) {
		dir, pub := signed(t)
		if err := os.WriteFile(filepath.Join(dir, "tmpfs-1.tar"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		requireErr(t, Verify(dir, pub), ErrModified, "tmpfs-1.tar")
	})
	t.Run("removed", func(t *testing.T) {
		dir, pub := signed(t)
		os.Remove(filepath.Join(dir, "container.json"))
		requireErr(t, Verify(dir, pub), ErrModified, "container.json")
	})
	t.Run("fifo", func(t *testing.T) {
		dir, pub := signed(t)
		p := filepath.Join(dir, "core-1.img")
		os.Remove(p)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		requireErr(t, Verify(dir, pub), ErrModified, "core-1.img")
	})
	t.Run("symlink", func(t *testing.T) {
		dir, pub := signed(t)
		p := filepath.Join(dir, "spec.dump")
		other := filepath.Join(t.TempDir(), "spec")
		b, _ := os.ReadFile(p)
		os.WriteFile(other, b, 0o600)
		os.Remove(p)
		if err := os.Symlink(other, p); err != nil {
			t.Fatal(err)
		}
		requireErr(t, Verify(dir, pub), ErrModified, "spec.dump")
	})
}

// TestVerifyBadSignature: the wrong key, an edited list, a truncated or
// garbage image.sig and a missing one are refused, never a panic.
func TestVerifyBadSignature(t *testing.T) {
	t.Run("wrong key", func(t *testing.T) {
		dir, _ := signed(t)
		other, _ := newKey(t)
		requireErr(t, Verify(dir, other), ErrBadSignature, Fingerprint(other))
	})
	t.Run("edited list", func(t *testing.T) {
		dir, pub := signed(t)
		p := filepath.Join(dir, Name)
		b, _ := os.ReadFile(p)
		i := strings.Index(string(b), "file ") + 5
		b[i] ^= 1 // a hex digit of the first sum
		os.WriteFile(p, b, 0o600)
		requireErr(t, Verify(dir, pub), ErrBadSignature, Name)
	})
	for name, content := range map[string]string{
		"empty": "", "garbage": "\x00\xff garbage", "no newline": header + "ed25519 AAAA",
		"bad base64": header + "ed25519 !!!\n", "header only": header,
	} {
		t.Run(name, func(t *testing.T) {
			dir, pub := signed(t)
			os.WriteFile(filepath.Join(dir, Name), []byte(content), 0o600)
			requireErr(t, Verify(dir, pub), ErrBadSignature, Name)
		})
	}
	t.Run("missing", func(t *testing.T) {
		dir, pub := signed(t)
		os.Remove(filepath.Join(dir, Name))
		requireErr(t, Verify(dir, pub), ErrNotSigned, "--sign-key")
	})
	t.Run("sign without inventory", func(t *testing.T) {
		dir := fakeImage(t)
		os.Remove(filepath.Join(dir, "inventory.img"))
		_, priv := newKey(t)
		if err := Sign(dir, priv); err == nil || !strings.Contains(err.Error(), "inventory.img") {
			t.Fatalf("Sign of an incomplete image: %v", err)
		}
	})
}

// TestKeyFiles: keygen's files round-trip; keys are never overwritten;
// the private key is 0600; the wrong half, a non-Ed25519 key, a file that
// is not PEM and a group-readable private key give ErrKey with a hint.
func TestKeyFiles(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "k")
	pub, err := GenerateKeyFiles(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(prefix + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", fi.Mode(), err)
	}
	priv, err := ReadPrivateKey(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	pub2, err := ReadPublicKey(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(pub2) || !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("keys do not round-trip")
	}
	if _, err := GenerateKeyFiles(prefix); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("second keygen over the same prefix: %v", err)
	}
	_, err = ReadPublicKey(prefix + ".key")
	requireErr(t, err, ErrKey, "private key")
	_, err = ReadPrivateKey(prefix + ".pub")
	requireErr(t, err, ErrKey, "PREFIX.key")

	dir := t.TempDir()
	notPEM := filepath.Join(dir, "notpem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o600)
	_, err = ReadPublicKey(notPEM)
	requireErr(t, err, ErrKey, "no PEM")
	_, err = ReadPrivateKey(filepath.Join(dir, "missing"))
	requireErr(t, err, ErrKey, "missing")

	open := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(prefix + ".key")
	os.WriteFile(open, b, 0o644)
	os.Chmod(open, 0o644)
	_, err = ReadPrivateKey(open)
	requireErr(t, err, ErrKey, "too open")

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecFile := filepath.Join(dir, "ec.key")
	os.WriteFile(ecFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	_, err = ReadPrivateKey(ecFile)
	requireErr(t, err, ErrKey, "not an Ed25519")
}

// TestOpenSSLKeys: keys made by openssl (PKCS#8 / PKIX PEM) are read.
func TestOpenSSLKeys(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	key, pubf := filepath.Join(dir, "o.key"), filepath.Join(dir, "o.pub")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", key).CombinedOutput(); err != nil {
		t.Skipf("openssl genpkey: %v %s", err, out)
	}
	os.Chmod(key, 0o600)
	if out, err := exec.Command("openssl", "pkey", "-in", key, "-pubout", "-out", pubf).CombinedOutput(); err != nil {
		t.Fatalf("openssl pkey: %v %s", err, out)
	}
	priv, err := ReadPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ReadPublicKey(pubf)
	if err != nil {
		t.Fatal(err)
	}
	img := fakeImage(t)
	if err := Sign(img, priv); err != nil {
		t.Fatal(err)
	}
	if err := Verify(img, pub); err != nil {
		t.Fatal(err)
	}
}
