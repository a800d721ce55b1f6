package tests

// docs/support.md is the support list users read: every kind of state,
// whether ctr-cr carries it exactly, refuses it at dump time (naming it),
// or needs an option, and the tests that show it. This test holds the
// table to the tests: every test a row names exists, and every C/R,
// negative, tree, real-program and bundle test is named by some row, so
// that a kind cannot be added, or lose its test, without the list saying.

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// supportStatuses are the words a row's status starts with.
var supportStatuses = []string{"exact", "refused", "option", "external"}

// testFuncRE matches a top-level test function declaration.
var testFuncRE = regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(t \*testing\.T\)`)

// listedPrefixes are the test families the table must cover.
var listedPrefixes = []string{"TestCR_", "TestNegative_", "TestTree_", "TestReal_", "TestRestore_", "TestCheckpoint_"}

// supportRow is one row of a table in docs/support.md.
type supportRow struct {
	line   int
	state  string
	status string
	tests  []string
}

// parseSupportTable reads the rows of every table whose header starts
// with "| State |" (columns: state, status, tests, notes).
func parseSupportTable(t *testing.T, path string) []supportRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []supportRow
	inTable := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		// "\|" is a pipe character inside a cell (markdown's escape)
		cells := strings.Split(strings.Trim(strings.ReplaceAll(line, `\|`, "\x00"), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case len(cells) > 0 && cells[0] == "State":
			inTable = true
			continue
		case !inTable || strings.HasPrefix(cells[0], "---"):
			continue
		}
		if len(cells) < 3 {
			t.Errorf("%s:%d: a row needs state, status and tests: %q", path, n, line)
			continue
		}
		r := supportRow{line: n, state: cells[0], status: cells[1]}
		for _, m := range regexp.MustCompile("`(Test[A-Za-z0-9_]+)`").FindAllStringSubmatch(cells[2], -1) {
			r.tests = append(r.tests, m[1])
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// declaredTests returns the test functions declared in the _test.go files
// under root (rows may name unit tests too).
func declaredTests(t *testing.T, root string) map[string]bool {
	t.Helper()
	have := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range testFuncRE.FindAllStringSubmatch(string(b), -1) {
			have[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return have
}

func TestSupportTable(t *testing.T) {
	root := testutil.RepoRoot()
	path := filepath.Join(root, "docs", "support.md")
	rows := parseSupportTable(t, path)
	if len(rows) < 20 {
		t.Fatalf("%s: %d rows: the table is missing or was not parsed", path, len(rows))
	}
	have := declaredTests(t, root)
	named := map[string]bool{}
	for _, r := range rows {
		if !slices.ContainsFunc(supportStatuses, func(s string) bool { return strings.HasPrefix(r.status, s) }) {
			t.Errorf("%s:%d: %s: status %q does not start with one of %v", path, r.line, r.state, r.status, supportStatuses)
		}
		if len(r.tests) == 0 {
			t.Errorf("%s:%d: %s: no test named", path, r.line, r.state)
		}
		for _, name := range r.tests {
			if !have[name] {
				t.Errorf("%s:%d: %s: test %s does not exist", path, r.line, r.state, name)
			}
			named[name] = true
		}
	}
	for name := range have {
		if !named[name] && slices.ContainsFunc(listedPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			t.Errorf("%s: test %s is named by no row: say which state it shows", path, name)
		}
	}
}
