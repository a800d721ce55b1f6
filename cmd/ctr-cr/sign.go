package main

// Signed images: dump/checkpoint --sign-key, restore --verify-key and
// keygen (core/imagesig; the trust model is docs/trust.md).

import (
	"fmt"
	"os"

	"github.com/ctr-cr/ctr-cr/core/imagesig"
)

const signKeyHelp = "sign the image with this Ed25519 private key (PEM, ctr-cr keygen): image.sig covers every file a restore reads; restore --verify-key checks it"

// signer reads the --sign-key file, if any, and returns the dump's commit
// step that signs the image in dir once it is complete (before the tree is
// killed, so a failed signature fails the dump with the tree running).
// A bad key file fails here, before anything is done.
func signer(keyFile, dir string) (func() error, error) {
	if keyFile == "" {
		return nil, nil
	}
	key, err := imagesig.ReadPrivateKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--sign-key: %w", err)
	}
	return func() error { return imagesig.Sign(dir, key) }, nil
}

// verifyImage checks the image in dir against the --verify-key file, if
// any, before anything is restored from it.
func verifyImage(keyFile, dir string) error {
	if keyFile == "" {
		return nil
	}
	pub, err := imagesig.ReadPublicKey(keyFile)
	if err != nil {
		return fmt.Errorf("--verify-key: %w", err)
	}
	if err := imagesig.Verify(dir, pub); err != nil {
		return fmt.Errorf("restore: %w; nothing was restored", err)
	}
	msgs.infof("Image %s verified: signed by %s", dir, imagesig.Fingerprint(pub))
	return nil
}

const keygenSynopsis = "keygen --out PREFIX"

// cmdKeygen writes a new Ed25519 key pair: PREFIX.key (private, 0600) and
// PREFIX.pub (public).
func cmdKeygen(args []string) error {
	var out string
	opts := []option{{names: []string{"out"}, arg: "PREFIX", value: stringValue{&out},
		help: "write the private key to PREFIX.key (mode 0600) and the public key to PREFIX.pub (PEM; never overwritten)"}}
	pos, err := parseOptions("keygen", keygenSynopsis, opts, args, os.Stdout)
	if err != nil {
		return err
	}
	if out == "" || len(pos) > 0 {
		return usageErrorf(keygenSynopsis, "--out PREFIX is required, and nothing else")
	}
	pub, err := imagesig.GenerateKeyFiles(out)
	if err != nil {
		return err
	}
	fmt.Printf("private key %s.key, public key %s.pub, fingerprint %s\n", out, out, imagesig.Fingerprint(pub))
	return nil
}
