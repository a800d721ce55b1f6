package imagesig

// The signature file
//
// Name is a text file in the image directory:
//
//	ctr-cr image signature 1
//	key SHA256:<fingerprint of the signing key>
//	file <sha256 hex> <size> <name>      one line per covered file, by name
//	ed25519 <base64 of the 64-byte signature>
//
// The signature is over every byte before its own line (the header, the
// key line and the file lines, newlines included). The covered files are
// every regular file of the directory a restore reads (see Covered):
// inventory.img (whose own checksums are CRC-32C, which an accident trips
// but anyone can forge, hence a SHA-256 of each file here), every other
// *.img, and a container checkpoint's spec.dump, container.json,
// ctr-cr.json and tmpfs-N.tar. Logs and pid files are not covered and not
// read by a restore.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Name is the signature file of a signed image.
const Name = "image.sig"

const (
	header = "ctr-cr image signature 1\n"
	// maxSigFile bounds what is read of image.sig (a line is under 120
	// bytes: a tree of 100000 files still fits).
	maxSigFile = 16 << 20
	// inventory is the core image's first file; a signature without it
	// does not sign an image.
	inventory = "inventory.img"
)

// Errors of Verify, each wrapped with the details.
var (
	ErrNotSigned    = errors.New("image is not signed")
	ErrBadSignature = errors.New("signature does not verify")
	ErrModified     = errors.New("image differs from what was signed")
)

// Covered reports whether the file name of an image directory is one a
// restore reads, so one a signature covers: *.img (the core image),
// *.tar (a container's tmpfs contents) and the container layer's
// spec.dump, container.json and ctr-cr.json, and a process image's
// namespaces.json.
func Covered(name string) bool {
	switch name {
	case "spec.dump", "container.json", "ctr-cr.json", "namespaces.json":
		return true
	}
	return strings.HasSuffix(name, ".img") || strings.HasSuffix(name, ".tar")
}

// fileSum is one covered file as signed.
type fileSum struct {
	name string
	size int64
	sum  [sha256.Size]byte
}

// Sign writes dir/image.sig, signing with key every covered file of dir
// (a complete image: inventory.img must be there). It is written through a
// temporary file renamed into place, so a previous image.sig is replaced
// whole or not at all.
func Sign(dir string, key ed25519.PrivateKey) error {
	names, err := coveredNames(dir)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if !slices.Contains(names, inventory) {
		return fmt.Errorf("sign: %s: no %s, not a complete image", dir, inventory)
	}
	var body bytes.Buffer
	body.WriteString(header)
	fmt.Fprintf(&body, "key %s\n", Fingerprint(key.Public().(ed25519.PublicKey)))
	for _, n := range names {
		if strings.ContainsAny(n, " \t\r\n") {
			return fmt.Errorf("sign: %s: file name %q has white space", dir, n)
		}
		s, err := hashFile(dir, n)
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		fmt.Fprintf(&body, "file %x %d %s\n", s.sum, s.size, s.name)
	}
	sig := ed25519.Sign(key, body.Bytes())
	fmt.Fprintf(&body, "ed25519 %s\n", base64.StdEncoding.EncodeToString(sig))
	tmp := filepath.Join(dir, Name+".tmp")
	os.Remove(tmp)
	if err := writeNew(tmp, body.Bytes(), 0o600); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, Name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sign: %w", err)
	}
	return nil
}

// coveredNames lists the covered names in dir, sorted. A covered name
// that is not a regular file is an error: a restore would read through it.
func coveredNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !Covered(e.Name()) {
			continue
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file (%v)", filepath.Join(dir, e.Name()), e.Type())
		}
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

// hashFile hashes dir/name, a regular file opened without following a
// symbolic link (and without blocking: a FIFO put in its place is refused,
// not waited on).
func hashFile(dir, name string) (fileSum, error) {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return fileSum{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fileSum{}, err
	}
	if !fi.Mode().IsRegular() {
		return fileSum{}, fmt.Errorf("%s: not a regular file", p)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fileSum{}, fmt.Errorf("%s: %w", p, err)
	}
	s := fileSum{name: name, size: n}
	h.Sum(s.sum[:0])
	return s, nil
}

// Verify checks dir/image.sig against pub before anything is restored
// from dir: the signature must verify with pub, every file it lists must
// be there with the signed size and SHA-256, and every covered file of dir
// must be listed (none added). The errors wrap ErrNotSigned,
// ErrBadSignature or ErrModified and name the file.
func Verify(dir string, pub ed25519.PublicKey) error {
	data, err := readSigFile(dir)
	if err != nil {
		return err
	}
	body, sig, err := splitSignature(data)
	if err != nil {
		return fmt.Errorf("verify: %s: %w: %w", filepath.Join(dir, Name), ErrBadSignature, err)
	}
	if !ed25519.Verify(pub, body, sig) {
		return fmt.Errorf("verify: %s: %w with the key %s (the image was signed by %s, or altered)",
			filepath.Join(dir, Name), ErrBadSignature, Fingerprint(pub), signerOf(body))
	}
	// the body is the signer's from here on
	sums, err := parseBody(body)
	if err != nil {
		return fmt.Errorf("verify: %s: %w", filepath.Join(dir, Name), err)
	}
	return checkFiles(dir, sums)
}

// readSigFile reads dir/image.sig, a regular file of bounded size.
func readSigFile(dir string) ([]byte, error) {
	p := filepath.Join(dir, Name)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("verify: %s: %w (no %s: dumped without --sign-key?)", dir, ErrNotSigned, Name)
	}
	if err != nil {
		return nil, fmt.Errorf("verify: %w: %w", ErrNotSigned, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxSigFile {
		return nil, fmt.Errorf("verify: %s: %w: not a regular file of at most %d bytes", p, ErrBadSignature, maxSigFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSigFile+1))
	if err != nil {
		return nil, fmt.Errorf("verify: %s: %w", p, err)
	}
	return data, nil
}

// splitSignature splits image.sig into the signed body and the signature
// of its last line.
func splitSignature(data []byte) (body, sig []byte, err error) {
	if !bytes.HasSuffix(data, []byte("\n")) {
		return nil, nil, errors.New("truncated (no final newline)")
	}
	i := bytes.LastIndexByte(data[:len(data)-1], '\n')
	if i < 0 {
		return nil, nil, errors.New("no signature line")
	}
	body, last := data[:i+1], string(data[i+1:len(data)-1])
	b64, ok := strings.CutPrefix(last, "ed25519 ")
	if !ok {
		return nil, nil, fmt.Errorf("last line %.40q is not an ed25519 signature", last)
	}
	sig, err = base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, nil, errors.New("malformed ed25519 signature")
	}
	return body, sig, nil
}

// signerOf returns the key line's fingerprint of an unverified body, for
// a message only.
func signerOf(body []byte) string {
	lines := strings.SplitN(string(body), "\n", 3)
	if len(lines) == 3 {
		if fp, ok := strings.CutPrefix(lines[1], "key "); ok && len(fp) < 80 {
			return "key " + fp
		}
	}
	return "an unknown key"
}

// parseBody parses a verified body into its file list (sorted, unique).
func parseBody(body []byte) ([]fileSum, error) {
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) < 2 || lines[0]+"\n" != header || !strings.HasPrefix(lines[1], "key ") {
		return nil, fmt.Errorf("%w: unknown format (want %q and a key line)", ErrBadSignature, strings.TrimSpace(header))
	}
	var sums []fileSum
	for i, l := range lines[2:] {
		f := strings.Split(l, " ")
		if len(f) != 4 || f[0] != "file" {
			return nil, fmt.Errorf("%w: line %d: malformed", ErrBadSignature, i+3)
		}
		var s fileSum
		sum, err := hex.DecodeString(f[1])
		size, serr := strconv.ParseInt(f[2], 10, 64)
		if err != nil || len(sum) != sha256.Size || serr != nil || size < 0 || !Covered(f[3]) || strings.ContainsAny(f[3], "/\x00") {
			return nil, fmt.Errorf("%w: line %d: malformed", ErrBadSignature, i+3)
		}
		if len(sums) > 0 && sums[len(sums)-1].name >= f[3] {
			return nil, fmt.Errorf("%w: line %d: %s out of order or listed twice", ErrBadSignature, i+3, f[3])
		}
		s.name, s.size = f[3], size
		copy(s.sum[:], sum)
		sums = append(sums, s)
	}
	if !slices.ContainsFunc(sums, func(s fileSum) bool { return s.name == inventory }) {
		return nil, fmt.Errorf("%w: %s is not signed", ErrBadSignature, inventory)
	}
	return sums, nil
}

// checkFiles compares dir with the signed list: no covered file added,
// none missing, each with its signed size and SHA-256.
func checkFiles(dir string, signed []fileSum) error {
	names, err := coveredNames(dir)
	if err != nil {
		return fmt.Errorf("verify: %w: %w", ErrModified, err)
	}
	listed := map[string]bool{}
	for _, s := range signed {
		listed[s.name] = true
	}
	for _, n := range names {
		if !listed[n] {
			return fmt.Errorf("verify: %s: %w: not covered by the signature (added after signing)", filepath.Join(dir, n), ErrModified)
		}
	}
	for _, s := range signed {
		p := filepath.Join(dir, s.name)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("verify: %s: %w: signed but missing", p, ErrModified)
		}
		if err != nil {
			return fmt.Errorf("verify: %s: %w", p, err)
		}
		if fi.Size() != s.size {
			return fmt.Errorf("verify: %s: %w: %d bytes, %d signed", p, ErrModified, fi.Size(), s.size)
		}
		got, err := hashFile(dir, s.name)
		if err != nil {
			return fmt.Errorf("verify: %w: %w", ErrModified, err)
		}
		if got.sum != s.sum || got.size != s.size {
			return fmt.Errorf("verify: %s: %w: its SHA-256 is not the signed one", p, ErrModified)
		}
	}
	return nil
}
