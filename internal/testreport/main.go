// Command testreport reads `go test -json` output on stdin, prints the
// output of failed and skipped tests, and a closing line
// "N passed, N failed, N skipped". It exits non-zero when a test or package
// failed, or when any test skipped while running as root: in CI (root) a
// skipped root test is a failure, never a silent pass.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	out := map[string]*strings.Builder{}
	var passed, failed, skipped []string
	var pkgFailed []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Println(sc.Text()) // build errors and other plain text
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			b := out[key]
			if b == nil {
				b = &strings.Builder{}
				out[key] = b
			}
			b.WriteString(e.Output)
			if e.Test == "" && strings.HasPrefix(e.Output, "ok ") {
				fmt.Print(e.Output)
			}
		case "pass":
			if e.Test != "" {
				passed = append(passed, key)
			}
		case "fail":
			if e.Test != "" {
				failed = append(failed, key)
			} else {
				pkgFailed = append(pkgFailed, e.Package)
			}
		case "skip":
			if e.Test != "" {
				skipped = append(skipped, key)
			}
		}
	}
	sort.Strings(failed)
	for _, k := range failed {
		fmt.Printf("\n=== FAILED %s\n%s", k, out[k])
	}
	for _, p := range pkgFailed {
		if b := out[p+" "]; b != nil {
			fmt.Printf("\n=== PACKAGE %s\n%s", p, b)
		}
	}
	for _, k := range skipped {
		fmt.Printf("=== SKIPPED %s: %s", k, lastLine(out[k]))
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", len(passed), len(failed), len(skipped))
	code := 0
	if len(failed) > 0 || len(pkgFailed) > 0 {
		code = 1
	}
	if os.Geteuid() == 0 && len(skipped) > 0 {
		fmt.Println("testreport: tests were skipped while running as root: that is a failure here")
		code = 1
	}
	os.Exit(code)
}

func lastLine(b *strings.Builder) string {
	if b == nil {
		return "\n"
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "---") {
			return l + "\n"
		}
	}
	return "\n"
}
