package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/container"
	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/pageserver"
)

const migrateSynopsis = "migrate (-t PID | CONTAINER_ID) --to HOST:PORT -D WORKDIR [--max-rounds N] [--print-stats]"

// cmdMigrate moves a process tree to `ctr-cr migrate-receive` at HOST:PORT:
// pre-copy rounds (each image sent whole as it is written, kept in
// WORKDIR/roundN too) until the pages written between two rounds stop
// shrinking by half, then the final dump, whose image the receiver
// restores while the tree here is still frozen: the tree is killed only
// once the other side runs it, and runs on here if anything fails first.
func cmdMigrate(args []string) error {
	var pid, maxRounds int
	var to, work string
	var stats bool
	var lc logConfig
	maxRounds = 4
	opts := []option{
		{names: []string{"t", "tree"}, arg: "PID", value: intValue{&pid}, help: "the process to migrate, with all its descendants"},
		{names: []string{"to"}, arg: "HOST:PORT", value: stringValue{&to}, help: "the `ctr-cr migrate-receive` on the destination (not encrypted: see page-server)"},
		{names: []string{"D", "images-dir"}, arg: "WORKDIR", value: stringValue{&work}, help: "where the rounds' images are written here too (roundN)"},
		{names: []string{"max-rounds"}, arg: "N", value: intValue{&maxRounds}, help: "pre-copy rounds at most before the final dump (default 4)"},
		{names: []string{"print-stats"}, value: boolValue{&stats}, help: "print each round's statistics as JSON"},
	}
	var cm containerMigration
	opts = append(opts, cm.options()...)
	opts = append(opts, logOptions(&lc)...)
	pos, err := parseOptions("migrate", migrateSynopsis, opts, args, os.Stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 || cm.given() {
		if pid > 0 || len(pos) != 1 {
			return usageErrorf(migrateSynopsis, "either -t PID or one CONTAINER_ID")
		}
		if to == "" || work == "" || maxRounds < 0 {
			return usageErrorf(migrateSynopsis, "--to HOST:PORT and -D WORKDIR are required")
		}
		cm.id, cm.to, cm.work, cm.maxRounds, cm.stats = pos[0], to, work, maxRounds, stats
		return cm.run(&lc)
	}
	if pid <= 0 || to == "" || work == "" || maxRounds < 0 {
		return usageErrorf(migrateSynopsis, "-t PID, --to HOST:PORT and -D WORKDIR are required")
	}
	if err := msgs.open(&lc, work); err != nil {
		return err
	}
	end, err := beginOp("migrate")
	if err != nil {
		return err
	}
	defer end()
	ctx, stop := interruptible()
	defer stop()
	parent := ""
	var last uint64
	k := 1
	for ; k <= maxRounds; k++ {
		dir := filepath.Join(work, pageserver.RoundName(k))
		if err := recordImageDir(dir); err != nil {
			return err
		}
		cl, err := dialPageServer(to)
		if err != nil {
			return err
		}
		st, err := dump.PreDump(ctx, pid, dir, dump.PreDumpOptions{ParentPath: parent, Warn: msgs.warnf, PagesSink: cl.Create, Commit: cl.Wait})
		if err == nil {
			err = sendImage(cl, dir)
		}
		if err == nil {
			err = cl.Finish()
		}
		if err != nil {
			return pageServerFailed(cl, fmt.Errorf("migrate: round %d (the tree runs on here): %w", k, err))
		}
		if stats {
			printStats(st)
		}
		msgs.infof("round %d: %d pages copied, %d written since the round before", k, st.PagesWritten, st.PagesDirty)
		parent = "../" + pageserver.RoundName(k)
		shrinking := k == 1 || st.PagesWritten < last/2
		last = st.PagesWritten
		if !shrinking {
			k++
			break
		}
	}
	dir := filepath.Join(work, pageserver.RoundName(k))
	if err := recordImageDir(dir); err != nil {
		return err
	}
	cl, err := dialPageServer(to)
	if err != nil {
		return err
	}
	var info string
	commit := func() error {
		_, err := offDumpThread(func() (struct{}, error) {
			if err := sendImage(cl, dir); err != nil {
				return struct{}{}, err
			}
			var err error
			info, err = cl.FinishRestore()
			return struct{}{}, err
		})
		return err
	}
	st, err := dump.Dump(ctx, pid, dir, dump.Options{ParentPath: parent, Warn: msgs.warnf, PagesSink: hostSideCreate(cl), PagesDone: cl.Wait, Commit: commit,
		TCPEstablished: cm.tcpEst, ExtUnixSk: cm.extUnix, FileLocks: cm.fileLocks})
	if err != nil {
		return pageServerFailed(cl, fmt.Errorf("migrate: final dump (the tree runs on here): %w", err))
	}
	if stats {
		printStats(st)
	}
	msgs.infof("Migration finished: %s", info)
	fmt.Println(info)
	return nil
}

// sendImage sends every file of the image in dir but the pages files
// (sent as they were written), with the container layer's files
// (container.LayerFile) of a container's checkpoint.
func sendImage(cl *pageserver.Client, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		k, _, err := image.KindOf(e.Name())
		layer := container.LayerFile(e.Name()) && e.Type().IsRegular()
		if !layer && (err != nil || k.Name == "pages") {
			continue
		}
		if err := cl.SendFile(e.Name(), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return cl.Wait()
}

const migrateReceiveSynopsis = "migrate-receive --address ADDR --port PORT -D DIR [--lazy-pages] [--bundle DIR] [--root DIR] [--runtime runc|crun] [--wait]"

// cmdMigrateReceive receives one migration into DIR/roundN and restores
// the last round (detached); it exits once that restore is done, or with
// --wait once the restored tree's root is gone.
func cmdMigrateReceive(args []string) error {
	var addr, dir string
	var port int
	var wait, lazyPages bool
	var lc logConfig
	port = -1
	opts := []option{
		{names: []string{"address"}, arg: "ADDR", value: stringValue{&addr}, help: "the address to listen on, and only that one (not encrypted: see page-server)"},
		{names: []string{"port"}, arg: "PORT", value: intValue{&port}, help: "the TCP port (0: any free one, printed)"},
		{names: []string{"D", "images-dir"}, arg: "DIR", value: stringValue{&dir}, help: "where the rounds' images go (DIR/roundN)"},
		{names: []string{"wait"}, value: boolValue{&wait}, help: "stay until the restored tree's root is gone, reaping orphans (as the init of a pid namespace must)"},
		{names: []string{"lazy-pages"}, value: boolValue{&lazyPages}, help: "restore a process tree with `restore --lazy-pages` from the received image: the source is told (and kills its tree) as soon as the tree runs here, its memory comes in after"},
	}
	var cr containerReceiver
	opts = append(opts, cr.options()...)
	opts = append(opts, logOptions(&lc)...)
	if _, err := parseOptions("migrate-receive", migrateReceiveSynopsis, opts, args, os.Stdout); err != nil {
		return err
	}
	if addr == "" || port < 0 || port > 65535 || dir == "" {
		return usageErrorf(migrateReceiveSynopsis, "--address, --port and -D DIR are required")
	}
	if err := msgs.open(&lc, dir); err != nil {
		return err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", l.Addr())
	var root int
	lazyDone := func() error { return nil }
	err = pageserver.ServeMigrationAccepting(l, dir, func(d string) (string, error) {
		if cr.isContainer(d) {
			info, pid, err := cr.restore(d)
			root = pid
			return info, err
		}
		if cr.given() {
			return "", fmt.Errorf("migrate-receive: %s is a process tree's image, but container options (--bundle, --root, --runtime) were given", d)
		}
		if lazyPages {
			pid, done, err := restoreLazy(d)
			root, lazyDone = pid, done
			return fmt.Sprintf("restored as pid %d (lazy pages)", pid), err
		}
		pid, err := restoreDetached(d)
		root = pid
		return fmt.Sprintf("restored as pid %d", pid), err
	}, container.LayerFile)
	if err == nil {
		err = lazyDone()
	}
	if err != nil || !wait {
		return err
	}
	return waitGone(root)
}

// restoreLazy starts `ctr-cr restore -d --lazy-pages` of the image in dir
// and returns the pid of the tree's root as soon as the tree runs (its
// pid file is written then), and a function that waits until the last
// page is in and returns what the restore reported if the pages could not
// all come (it kills the tree then). Every file of the image is here,
// each checked against the sender's checksum as it arrived: what is left
// to fail is rare (the pages file's checksum, verified as the pages go
// in), but it comes after the source was told to kill its tree.
func restoreLazy(dir string) (int, func() error, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, nil, err
	}
	pidFile := filepath.Join(dir, "restored.pid")
	var out bytes.Buffer
	cmd := exec.Command(exe, "restore", "-D", dir, "-d", "--lazy-pages", "--pid-file", pidFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	wait := func(err error) error {
		if err != nil {
			return fmt.Errorf("lazy restore: %w: %s", err, restoreOutput(dir, out.Bytes()))
		}
		return nil
	}
	for {
		b, _ := os.ReadFile(pidFile)
		if s, ok := strings.CutSuffix(string(b), "\n"); ok {
			pid, err := strconv.Atoi(s)
			if err != nil {
				return 0, nil, fmt.Errorf("lazy restore: pid file %q", b)
			}
			return pid, sync.OnceValue(func() error { return wait(<-exited) }), nil
		}
		select {
		case err := <-exited:
			if err == nil {
				err = errors.New("exited without a pid file")
			}
			return 0, nil, wait(err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// restoreDetached restores the image in dir with `ctr-cr restore -d` and
// returns the pid of the tree's root.
func restoreDetached(dir string) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	pidFile := filepath.Join(dir, "restored.pid")
	out, err := exec.Command(exe, "restore", "-D", dir, "-d", "--pid-file", pidFile).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, restoreOutput(dir, out))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, errors.New("restore left no pid file")
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// restoreOutput is what a failed restore printed, for the error sent back
// to the source. A crash's goroutine dump is cut to its header and the
// first frames (the rest goes to DIR/restore.log): the header names the
// cause and must survive the source's and a CI log's truncation.
func restoreOutput(dir string, out []byte) string {
	s := strings.TrimSpace(string(out))
	i := strings.Index(s, "\ngoroutine ")
	if i < 0 {
		return s
	}
	log := filepath.Join(dir, "restore.log")
	os.WriteFile(log, out, 0o600)
	lines := strings.SplitN(s[i+1:], "\n", 12)
	return fmt.Sprintf("%s\n%s\n[... the whole output: %s]", s[:i], strings.Join(lines[:min(len(lines), 11)], "\n"), log)
}

// waitGone waits until pid has exited, reaping whatever child ends
// meanwhile (orphans come to the init of a pid namespace).
func waitGone(pid int) error {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(pfd)
	for {
		var ws unix.WaitStatus
		for {
			if p, _ := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil); p <= 0 {
				break
			}
		}
		fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 200); n > 0 {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}
