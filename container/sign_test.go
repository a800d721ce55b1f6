package container

import (
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/imagesig"
)

// TestSignatureCoversContainerFiles: every file the container layer
// writes beside the core image is one a signature covers, and image.sig
// is a file a later checkpoint may replace.
func TestSignatureCoversContainerFiles(t *testing.T) {
	for _, n := range []string{SpecDumpName, MetadataName, StateName, "tmpfs-0.tar", "inventory.img"} {
		if !imagesig.Covered(n) {
			t.Errorf("%s is not covered by an image signature", n)
		}
	}
	if !imageFileName(imagesig.Name) {
		t.Errorf("%s is not a file of an image directory", imagesig.Name)
	}
}

// TestLayerFilesAreImageKinds: every file the container layer writes into
// an image is a layer kind of core/image, so that the inventory lists it
// with its checksum and a restore verifies it.
func TestLayerFilesAreImageKinds(t *testing.T) {
	for _, n := range []string{SpecDumpName, MetadataName, StateName, StdioName, PreDumpName, "tmpfs-0.tar", "tmpfs-12.tar"} {
		k, _, err := image.KindOf(n)
		if err != nil || !k.Layer {
			t.Errorf("%s: kind %+v, %v: not a layer kind of the image", n, k, err)
		}
		if !LayerFile(n) {
			t.Errorf("%s: not a LayerFile (a migration would not send it)", n)
		}
	}
	if got := layerFiles(&State{TmpfsFiles: map[string]string{"/a": "tmpfs-0.tar"}}); len(got) != 4 {
		t.Errorf("layerFiles = %v", got)
	}
}
