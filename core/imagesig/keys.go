// Package imagesig signs an image directory with Ed25519 and verifies it
// before a restore (ctr-cr dump/checkpoint --sign-key, restore
// --verify-key, keygen). See docs/trust.md for the trust model.
//
// # Keys
//
// A private key is PEM "PRIVATE KEY" (PKCS#8), a public key PEM "PUBLIC
// KEY" (PKIX), both Ed25519: the files `ctr-cr keygen --out PREFIX` writes
// (PREFIX.key 0600, PREFIX.pub 0644), and the ones `openssl genpkey
// -algorithm ed25519` and `openssl pkey -pubout` write. A key's
// fingerprint is "SHA256:" and the unpadded base64 of the SHA-256 of its
// 32 raw public key bytes.
package imagesig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ErrKey: a key file that cannot be used (unreadable, not PEM, not
// Ed25519, the wrong half, too open).
var ErrKey = errors.New("bad key file")

// maxKeyFile bounds what is read of a key file (a PEM Ed25519 key is
// about 120 bytes).
const maxKeyFile = 64 << 10

// Fingerprint names a public key in messages.
func Fingerprint(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(h[:])
}

// The DER of Ed25519 keys is fixed (RFC 8410): a prefix naming the
// algorithm (OID 1.3.101.112), then the 32-byte seed or public key. Keys
// are read and written with these prefixes rather than through
// crypto/x509, whose package initialisation every ctr-cr command would
// pay at start-up. openssl genpkey -algorithm ed25519 writes the same form.
var (
	pkcs8Ed25519Prefix = []byte{0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20}
	pkixEd25519Prefix  = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
)

// GenerateKeyFiles makes a new key pair and writes prefix.key (PKCS#8
// PEM, mode 0600) and prefix.pub (PKIX PEM, mode 0644). Neither file may
// exist already: a key is never overwritten.
func GenerateKeyFiles(prefix string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der := append(append([]byte(nil), pkcs8Ed25519Prefix...), priv.Seed()...)
	pder := append(append([]byte(nil), pkixEd25519Prefix...), pub...)
	keyPath, pubPath := prefix+".key", prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("keygen: %s exists already; refusing to overwrite a key", p)
		}
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, fmt.Errorf("keygen: %w", err)
	}
	return pub, nil
}

// writeNew creates path exclusively with mode perm (whatever the umask)
// and writes b.
func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if err := f.Chmod(perm); err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// readPEM reads the one PEM block of the key file at path.
func readPEM(path string) (*pem.Block, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: %w", ErrKey, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: %w", ErrKey, path, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxKeyFile {
		return nil, nil, fmt.Errorf("%w %s: not a key file (a regular file of at most %d bytes)", ErrKey, path, maxKeyFile)
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil && fi.Size() > 0 {
		return nil, nil, fmt.Errorf("%w %s: %w", ErrKey, path, err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, nil, fmt.Errorf("%w %s: no PEM block (want an Ed25519 key as ctr-cr keygen writes it)", ErrKey, path)
	}
	return b, fi, nil
}

// ReadPrivateKey reads an Ed25519 private key (PEM PKCS#8). A file that
// group or others may read is refused, as ssh refuses one: the key is
// what a signature vouches for.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, fi, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	if b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w %s: holds a PEM %q, want an Ed25519 \"PRIVATE KEY\" (PKCS#8; --sign-key takes PREFIX.key of ctr-cr keygen)", ErrKey, path, b.Type)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%w %s: permissions %04o are too open: a signing key must be readable by its owner only (chmod 600 %s)", ErrKey, path, m, path)
	}
	seed, ok := bytes.CutPrefix(b.Bytes, pkcs8Ed25519Prefix)
	if !ok || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w %s: not an Ed25519 private key in PKCS#8 (RFC 8410) form", ErrKey, path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// ReadPublicKey reads an Ed25519 public key (PEM PKIX).
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	b, _, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	if b.Type != "PUBLIC KEY" {
		hint := ""
		if b.Type == "PRIVATE KEY" {
			hint = "; this is a private key: give its public half (PREFIX.pub of ctr-cr keygen)"
		}
		return nil, fmt.Errorf("%w %s: holds a PEM %q, want an Ed25519 \"PUBLIC KEY\" (PKIX)%s", ErrKey, path, b.Type, hint)
	}
	pub, ok := bytes.CutPrefix(b.Bytes, pkixEd25519Prefix)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w %s: not an Ed25519 public key in PKIX (RFC 8410) form", ErrKey, path)
	}
	return ed25519.PublicKey(pub), nil
}
