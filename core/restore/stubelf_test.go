package restore

import (
	"bytes"
	"debug/elf"
	"errors"
	"os/exec"
	"testing"
)

// The stub program is a valid static x86-64 executable whose code, if it
// ever runs untraced, exits with status 3.
func TestStubProgramRunsAndExits3(t *testing.T) {
	f, err := elf.NewFile(bytes.NewReader(stubELF()))
	if err != nil {
		t.Fatalf("stub ELF does not parse: %v", err)
	}
	if f.Type != elf.ET_EXEC || f.Machine != elf.EM_X86_64 || len(f.Progs) != 2 || f.Progs[0].Type != elf.PT_LOAD {
		t.Fatalf("stub ELF: type %v machine %v progs %d", f.Type, f.Machine, len(f.Progs))
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("stub ELF has an interpreter")
		}
	}
	path, ok := stubProgram()
	if !ok {
		t.Fatal("no executable memfd for the stub program")
	}
	for i := 0; i < 2; i++ { // the sealed memfd is reused
		err = (&exec.Cmd{Path: path, Args: []string{"ctr-cr-stub", StubArg}}).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("run %d of the stub program: %v, want exit status 3", i, err)
		}
	}
}
