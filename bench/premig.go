package main

// The pre-copy workload (issue 16's goals): a process holding N MiB that
// keeps writing a little of it, pre-dumped twice while it runs (the first
// round through a page server on loopback: its throughput), then dumped
// with --parent-path: the final dump's frozen time is what a live
// migration's clients notice. CRIU cannot pre-dump on this kernel (no
// soft-dirty), so there is no CRIU column: the anon-N workload of the
// same size is its full-dump figure.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dirtyWorkload maps mib MiB, fills every page with a pattern of its
// generation, prints ready, then every 10 ms writes kibPerSec/100 KiB of
// pages (the next ones, round robin), each with a new generation; on
// SIGUSR1 it checks every page against the generation table (in its own
// memory, so it is dumped and restored with the pages).
func dirtyWorkload(mibs, kibs, dir string) {
	mib, _ := strconv.Atoi(mibs)
	kib, _ := strconv.Atoi(kibs)
	const page = 4096
	n := mib << 20
	mem, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		fmt.Println("mmap:", err)
		os.Exit(1)
	}
	pages := n / page
	gen := make([]uint8, pages)
	fillPage := func(p int) {
		v := byte(p) ^ gen[p] ^ 0x5a
		for i := p * page; i < (p+1)*page; i += 64 {
			mem[i] = v
		}
	}
	for p := 0; p < pages; p++ {
		fillPage(p)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	per := max(1, kib*1024/page/100) // pages per 10 ms tick
	tick := time.NewTicker(10 * time.Millisecond)
	fmt.Println("ready")
	next := 0
	for {
		select {
		case <-tick.C:
			for k := 0; k < per; k++ {
				gen[next]++
				fillPage(next)
				next = (next + 1) % pages
			}
		case <-sig:
			ok := true
			for p := 0; p < pages && ok; p++ {
				v := byte(p) ^ gen[p] ^ 0x5a
				for i := p * page; i < (p+1)*page; i += 64 {
					if mem[i] != v {
						ok = false
						break
					}
				}
			}
			if ok {
				fmt.Println("verified ok")
			} else {
				fmt.Println("verify FAILED")
			}
		}
	}
}

// premigResult holds one pre-copy workload's figures per run.
type premigResult struct {
	r                  result    // dump/frozen/restore of the final round
	round1, psGBps     []float64 // first pre-dump ms; page server GB/s
	round2, dirtyPages []float64 // second pre-dump ms; pages the final dump wrote
}

// benchPreCopy runs the pre-copy workload runs times (after the warm-up)
// and returns its machine-readable lines.
func benchPreCopy(bin string, mib, dirtyKiB, runs int) ([]string, error) {
	name := fmt.Sprintf("precopy-%dM", mib)
	res := &premigResult{r: result{name: name}}
	for i := 0; i < warmup+runs; i++ {
		if err := preCopyCycle(bin, mib, dirtyKiB, res); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	cut := func(s []float64) []float64 { return s[min(warmup, len(s)):] }
	res.r.dropWarmup()
	res.round1, res.round2, res.psGBps, res.dirtyPages = cut(res.round1), cut(res.round2), cut(res.psGBps), cut(res.dirtyPages)
	line := res.r.report()
	fmt.Printf("%-22s pre-dump 1 (page server) %s ms, %.2f GB/s; pre-dump 2 %s ms; final dump wrote %.0f pages\n",
		"", stat(res.round1), median(res.psGBps), stat(res.round2), median(res.dirtyPages))
	return []string{line, fmt.Sprintf("precopy name=%s final_frozen_ms=%.1f final_dump_ms=%.1f final_pages=%.0f predump1_ms=%.1f predump2_ms=%.1f pageserver_gbps=%.2f",
		name, median(res.r.frozen), median(res.r.dump), median(res.dirtyPages), median(res.round1), median(res.round2), median(res.psGBps))}, nil
}

// preCopyCycle: start the workload, pre-dump it twice a second apart and
// dump it a second later, every round through a page server (as a
// migration does: the rounds' pages go to the other side), restore from
// what the page server received, verify from inside.
func preCopyCycle(bin string, mib, dirtyKiB int, res *premigResult) error {
	in, err := startInstance([]string{"dirty-workload", strconv.Itoa(mib), strconv.Itoa(dirtyKiB)}, 1)
	if err != nil {
		return err
	}
	defer in.stop()
	src, dst := filepath.Join(in.dir, "src"), filepath.Join(in.dir, "dst")
	var out []byte
	round := func(cmd, name, parent string) (float64, error) {
		ps, addr, err := startPageServer(bin, filepath.Join(dst, name))
		if err != nil {
			return 0, err
		}
		args := []string{cmd, "-t", strconv.Itoa(in.pid), "-D", filepath.Join(src, name), "--page-server", addr, "--print-stats"}
		if parent != "" {
			args = append(args, "--parent-path", parent)
		}
		if cmd == "dump" {
			unix.Sync() // as every timed dump (timeDump)
		}
		var d float64
		d, out, err = res.r.run(bin, args, false)
		if werr := ps.Wait(); err == nil && werr != nil {
			err = fmt.Errorf("page-server: %w", werr)
		}
		return d, err
	}
	d1, err := round("pre-dump", "r1", "")
	if err != nil {
		return err
	}
	res.round1 = append(res.round1, d1)
	res.psGBps = append(res.psGBps, float64(pagesWritten(out))*4096/1e9/(d1/1000))
	time.Sleep(time.Second)
	d2, err := round("pre-dump", "r2", "../r1")
	if err != nil {
		return err
	}
	res.round2 = append(res.round2, d2)
	time.Sleep(time.Second)
	d3, err := round("dump", "r3", "../r2")
	if err != nil {
		return err
	}
	res.r.dump = append(res.r.dump, d3)
	if f, ok := frozenFromStats("", out); ok {
		res.r.frozen = append(res.r.frozen, f)
	}
	res.dirtyPages = append(res.dirtyPages, float64(pagesWritten(out)))
	for _, name := range []string{"r1", "r2", "r3"} {
		// the rest of each image goes to the other side by any means
		if err := copyFiles(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	res.r.image = dirMiB(filepath.Join(dst, "r3"))
	for k := 0; k < 2000; k++ {
		reapAll()
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", in.pid)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	e := ctrcrEngine(bin, nil)
	e.phases = false
	if err := res.r.timeRestore(e, e.restore(filepath.Join(dst, "r3"))); err != nil {
		return err
	}
	unix.Kill(in.pid, unix.SIGUSR1)
	if err := waitForN(in.out, "verified", 1, 60*time.Second); err != nil || countLines(in.out, "verify FAILED") > 0 {
		b, _ := os.ReadFile(in.out)
		return fmt.Errorf("restored workload did not verify: %s", b)
	}
	return nil
}

// startPageServer starts `ctr-cr page-server` on a free loopback port into
// dir and returns it with its address.
func startPageServer(bin, dir string) (*exec.Cmd, string, error) {
	c := exec.Command(bin, "page-server", "--address", "127.0.0.1", "--port", "0", "-D", dir)
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := c.Start(); err != nil {
		return nil, "", err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok {
		c.Process.Kill()
		c.Wait()
		return nil, "", fmt.Errorf("page-server: %q", line)
	}
	return c, addr, nil
}

// pagesWritten reads pages_written from a --print-stats JSON object.
func pagesWritten(stdout []byte) int64 {
	var st struct {
		PagesWritten int64 `json:"pages_written"`
	}
	json.Unmarshal(stdout, &st)
	return st.PagesWritten
}

// copyFiles copies the regular files of directory from into directory to.
func copyFiles(from, to string) error {
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(to, e.Name()), b, 0o600)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
