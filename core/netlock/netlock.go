// Package netlock keeps dumped TCP connections silent while they exist only
// in an image.
//
// Between the moment a connection's state is read (TCP_REPAIR) and the
// moment the restored socket takes over, the kernel must not answer the
// peer: a segment that meets no socket is answered with RST, and the peer
// drops the connection. Lock installs an nftables table of its own that
// drops every packet of exactly the given connections, in both directions,
// on the input and output hooks of the current network namespace; nothing
// else on the host is matched, and the host's own tables are not touched.
// Unlock deletes that table. The table outlives the dumping process: the
// dump records its name in the image and restore removes it once the
// sockets are back (or when the restore fails, after which the peer's next
// segment resets the connection, as it would without the lock).
//
// The rules are loaded with the nft program (package nftables), one
// atomic transaction per call, like CRIU loads its lock with
// iptables-restore; a host without nft cannot use --tcp-established and is
// told so.
package netlock

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Conn is one TCP connection as seen from the dumped socket.
type Conn struct {
	Local, Remote netip.AddrPort
}

// Prefix starts the name of every table this package creates.
const Prefix = "ctrcr_lock_"

// compiled on first use: package init runs on every ctr-cr start-up
var nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^` + Prefix + `[0-9a-f]{16}$`) })

// NewName returns a fresh table name.
func NewName() string {
	var b [8]byte
	rand.Read(b[:])
	return Prefix + hex.EncodeToString(b[:])
}

// ValidName reports whether name is one NewName could have made (an image
// is not trusted to name any other table).
func ValidName(name string) bool { return nameRE().MatchString(name) }

// Ruleset returns the nft script that creates table name dropping conns.
func Ruleset(name string, conns []Conn) (string, error) {
	if !ValidName(name) {
		return "", fmt.Errorf("bad lock table name %q", name)
	}
	var rules []string
	for _, c := range conns {
		l, r := unmap(c.Local), unmap(c.Remote)
		if !l.IsValid() || !r.IsValid() || l.Addr().Is4() != r.Addr().Is4() {
			return "", fmt.Errorf("connection %s -> %s: bad addresses", c.Local, c.Remote)
		}
		fam := "ip"
		if l.Addr().Is6() {
			fam = "ip6"
		}
		for _, d := range [2][2]netip.AddrPort{{l, r}, {r, l}} {
			rules = append(rules, fmt.Sprintf("%s saddr %s %s daddr %s tcp sport %d tcp dport %d drop",
				fam, d[0].Addr(), fam, d[1].Addr(), d[0].Port(), d[1].Port()))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", name)
	for _, hook := range []string{"input", "output"} {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority -300; policy accept;\n", hook, hook)
		for _, r := range rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// unmap turns an IPv4-mapped IPv6 address into IPv4: such a connection's
// packets are IPv4 packets.
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Lock creates table name in the calling thread's network namespace,
// dropping every packet of conns. It fails if the table exists already.
func Lock(name string, conns []Conn) error {
	script, err := Ruleset(name, conns)
	if err != nil {
		return fmt.Errorf("network lock: %w", err)
	}
	// "add" is a no-op on an existing table: create it first so that a
	// name clash fails instead of merging rules.
	if err := nft("create table inet "+name+"\n", "create"); err != nil {
		return fmt.Errorf("network lock %s: %w", name, err)
	}
	if err := nft(script, "load"); err != nil {
		nft("delete table inet "+name+"\n", "delete")
		return fmt.Errorf("network lock %s: %w", name, err)
	}
	return nil
}

// Unlock deletes table name. A table that is not there is not an error
// (the lock was never taken, or was removed already).
func Unlock(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("network unlock: bad lock table name %q", name)
	}
	err := nft("delete table inet "+name+"\n", "delete")
	if err != nil && (strings.Contains(err.Error(), "No such file or directory") || strings.Contains(err.Error(), "does not exist")) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("network unlock %s: %w", name, err)
	}
	return nil
}

// Tables lists the lock tables present in the calling thread's network
// namespace (for tests and diagnostics).
func Tables() ([]string, error) {
	out, err := run("list tables\n", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "table" && strings.HasPrefix(f[2], Prefix) {
			names = append(names, f[2])
		}
	}
	return names, nil
}

// ErrNoNft reports a host without the nft program.
var ErrNoNft = errors.New("the nft program (package nftables) is needed to lock TCP connections and was not found")

func nft(script, what string) error {
	_, err := run(script, what)
	return err
}

func run(script, what string) (string, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nft", "/sbin/nft"} {
			if _, serr := exec.LookPath(p); serr == nil {
				path, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return "", ErrNoNft
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("nft %s: %w: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}
