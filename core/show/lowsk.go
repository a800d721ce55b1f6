package show

import (
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/netlinksk"
	"github.com/ctr-cr/ctr-cr/core/packetsk"
)

// lowSocketExtra describes a netlink or packet socket entry.
func lowSocketExtra(f *imagepb.FileEntry) string {
	switch {
	case f.Kind == imagepb.FileKind_FILE_NETLINK && f.Netlink != nil:
		return " " + netlinksk.Describe(f.Netlink)
	case f.Kind == imagepb.FileKind_FILE_PACKET && f.Packet != nil:
		return " " + packetsk.Describe(f.Packet)
	}
	return ""
}
