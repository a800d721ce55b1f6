package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/ctr-cr/ctr-cr/core/pageserver"
)

const pageServerSynopsis = "page-server --address ADDR --port PORT -D DIR [--lazy-pages]"

// pageServerHelp is the help of dump's and pre-dump's --page-server.
const pageServerHelp = "send the pages files to `ctr-cr page-server` at HOST:PORT (not encrypted: see docs) instead of DIR"

// cmdPageServer receives one dump's pages files into DIR and exits once
// the dump says the image is complete (0) or fails (1, files removed).
func cmdPageServer(args []string) error {
	var addr, dir string
	var port int
	var lazyPages bool
	var lc logConfig
	port = -1
	opts := []option{
		{names: []string{"address"}, arg: "ADDR", value: stringValue{&addr}, help: "the address to listen on, and only that one (the stream is not encrypted: an address only the source reaches, or an SSH/TLS tunnel)"},
		{names: []string{"port"}, arg: "PORT", value: intValue{&port}, help: "the TCP port (0: any free one, printed)"},
		{names: []string{"D", "images-dir"}, arg: "DIR", value: stringValue{&dir}, help: "where the pages files go (the rest of the image is copied there after the dump)"},
		{names: []string{"lazy-pages"}, value: boolValue{&lazyPages}, help: "at the source: serve the pages files of the image in DIR to a `restore --lazy-pages --page-server` until it has every page"},
	}
	opts = append(opts, logOptions(&lc)...)
	if _, err := parseOptions("page-server", pageServerSynopsis, opts, args, os.Stdout); err != nil {
		return err
	}
	if addr == "" || port < 0 || port > 65535 || dir == "" {
		return usageErrorf(pageServerSynopsis, "--address, --port and -D DIR are required")
	}
	if err := msgs.open(&lc, dir); err != nil {
		return err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	// scripts (and tests) learn the port from this line
	fmt.Printf("listening on %s\n", l.Addr())
	if lazyPages {
		if err := pageserver.ServePages(l, dir); err != nil {
			return err
		}
		msgs.infof("Page server: the lazy restore has every page of %s", dir)
		return nil
	}
	if err := pageserver.Serve(l, dir); err != nil {
		return err
	}
	msgs.infof("Page server: pages received into %s", dir)
	return nil
}

// dialPageServer connects to the page server at addr for a dump ("":
// none, nil).
func dialPageServer(addr string) (*pageserver.Client, error) {
	if addr == "" {
		return nil, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%w: %v", pageserver.ErrNoServer, err)
	}
	return pageserver.Dial(addr)
}

// pageServerFailed ends cl's session after a failed dump; a failure of
// the page server is what err reports first.
func pageServerFailed(cl *pageserver.Client, err error) error {
	if cl == nil {
		return err
	}
	cerr := cl.Err()
	cl.Abort()
	if cerr != nil && !strings.Contains(err.Error(), cerr.Error()) {
		return fmt.Errorf("%w (the dump: %v)", cerr, err)
	}
	return err
}

// offDumpThread runs fn on a goroutine of its own and returns what it
// returns. A dump moves the thread it runs on into the dumped tree's
// network namespace (sock_diag, the TCP lock) and calls PagesSink and
// Commit from there: a connection to a page server dialled there would
// leave from the container's network, not from ours.
func offDumpThread[T any](fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := fn()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// hostSideCreate is cl.Create dialling from our network namespace
// (offDumpThread), as a dump's PagesSink.
func hostSideCreate(cl *pageserver.Client) func(string) (io.WriteCloser, error) {
	return func(name string) (io.WriteCloser, error) {
		return offDumpThread(func() (io.WriteCloser, error) { return cl.Create(name) })
	}
}
