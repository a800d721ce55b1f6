package dump

import (
	"errors"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/memory"
)

// The scans run on the guess are used only when the guess named exactly
// the registered mappings the frozen smaps shows, and did not fail.
func TestGuessedOnlyWhenExact(t *testing.T) {
	kept := memory.Spans{{Start: 0x1000, End: 0x5000}, {Start: 0x9000, End: 0xa000}}
	file := memory.Spans{{Start: 0x20000, End: 0x21000}}
	done := make(chan struct{})
	close(done)
	sp := &specScan{kept: kept, keptFile: file, done: done, clean: memory.Spans{{Start: 0x1000, End: 0x2000}}}
	pm := &premig{spec: map[int]*specScan{7: sp}}
	if got := pm.guessed(7, kept, file); got != sp {
		t.Fatalf("same mappings: guess not used")
	}
	for name, c := range map[string][2]memory.Spans{
		"a mapping more":       {append(append(memory.Spans{}, kept...), memory.Span{Start: 0xb000, End: 0xc000}), file},
		"a mapping less":       {kept[:1], file},
		"a mapping grown":      {memory.Spans{{Start: 0x1000, End: 0x6000}, kept[1]}, file},
		"file mapping as anon": {append(append(memory.Spans{}, kept...), file...), nil},
	} {
		if got := pm.guessed(7, c[0], c[1]); got != nil {
			t.Errorf("%s: guess used", name)
		}
	}
	if got := pm.guessed(8, kept, file); got != nil {
		t.Errorf("another pid: guess used")
	}
	sp.err = errors.New("scan failed")
	if got := pm.guessed(7, kept, file); got != nil {
		t.Errorf("failed scan: guess used")
	}
	notStarted := &premig{spec: map[int]*specScan{7: {kept: kept, keptFile: file}}}
	if got := notStarted.guessed(7, kept, file); got != nil {
		t.Errorf("scans never started: guess used")
	}
}
