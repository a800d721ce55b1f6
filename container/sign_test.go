package container

import (
	"testing"

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
