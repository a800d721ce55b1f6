package testutil

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// OCIArchive packs a root file system tar (one layer) into an OCI image
// layout archive named name (the io.containerd.image.name annotation), as
// `ctr images import` takes it: containerd needs no registry then. The
// image runs with PATH=/bin on linux/amd64.
func OCIArchive(name string, layer []byte) ([]byte, error) {
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		blobs[d] = b
		return "sha256:" + d, len(b)
	}
	ld, ls := put(layer)
	cfg, err := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "config": map[string]any{"Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{ld}}})
	if err != nil {
		return nil, err
	}
	cd, cs := put(cfg)
	man, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}}})
	if err != nil {
		return nil, err
	}
	md, ms := put(man)
	idx, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
		"annotations": map[string]string{"io.containerd.image.name": name},
		"platform":    map[string]string{"architecture": "amd64", "os": "linux"}}}})
	if err != nil {
		return nil, err
	}
	var arch bytes.Buffer
	tw := tar.NewWriter(&arch)
	add := func(n string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := add("index.json", idx); err != nil {
		return nil, err
	}
	for d, b := range blobs {
		if err := add("blobs/sha256/"+d, b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return arch.Bytes(), nil
}
