package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The restore stub's program is a minimal static ELF made here rather than
// ctr-cr's own 11 MB binary. The stub never runs its own code (its entry
// point is overwritten with the gadget at the exec stop), so any valid
// executable would do; a small one
//   - costs nothing to put into a memfd inside a container's init (copying
//     ctr-cr there took ~10 ms, and its pages were charged to the
//     container's memory cgroup for the length of the restore), and
//   - leaves fewer mappings to unmap before the restored ones go in.
//
// Its code, should it ever run (its tracer gone before the gadget is
// written), is exit_group(3), as ctr-cr's own stub mode does.

// stubBase is where the stub's one segment is loaded: below the usual
// 0x400000 of non-PIE programs and far from the control area's first
// candidate address; the restore unmaps it before mapping the task's own.
const stubBase = 0x100000

// stubELF returns the stub program.
func stubELF() []byte {
	const (
		ehSize   = 64
		phSize   = 56
		phNum    = 2
		codeOff  = ehSize + phNum*phSize
		ptLoad   = 1
		ptGnuStk = 0x6474e551
	)
	code := []byte{
		0xbf, 0x03, 0x00, 0x00, 0x00, // mov edi, 3
		0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231 (exit_group)
		0x0f, 0x05, // syscall
		0xcc, 0xcc, 0xcc, 0xcc, // int3: room after the gadget
	}
	b := make([]byte, codeOff+len(code))
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */})
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], stubBase+codeOff) // entry
	le.PutUint64(b[32:], ehSize)           // program headers
	le.PutUint16(b[52:], ehSize)
	le.PutUint16(b[54:], phSize)
	le.PutUint16(b[56:], phNum)
	ph := b[ehSize:]
	le.PutUint32(ph[0:], ptLoad)
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[16:], stubBase)
	le.PutUint64(ph[24:], stubBase)
	le.PutUint64(ph[32:], uint64(len(b)))
	le.PutUint64(ph[40:], uint64(len(b)))
	le.PutUint64(ph[48:], 0x1000)
	ph = ph[phSize:]
	le.PutUint32(ph[0:], ptGnuStk)
	le.PutUint32(ph[4:], 6) // RW, not executable
	copy(b[codeOff:], code)
	return b
}

const mfdExec = 0x10 // MFD_EXEC (6.3+): executable even where vm.memfd_noexec makes memfds non-executable by default

// stubProgram holds a memfd with the stub program in ctr-cr, made once; its
// path /proc/self/fd/N is what helper stubs exec. ok is false when no
// executable memfd could be made (then ctr-cr's own binary is the stub).
var stubProgram = sync.OnceValues(func() (path string, ok bool) {
	fd, err := unix.MemfdCreate("ctr-cr-stub", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|mfdExec)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("ctr-cr-stub", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return "", false
	}
	b := stubELF()
	if n, err := unix.Write(fd, b); err != nil || n != len(b) {
		unix.Close(fd)
		return "", false
	}
	unix.Fchmod(fd, 0o500)
	// sealed: nothing can change what every later stub runs
	unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK)
	return fmt.Sprintf("/proc/self/fd/%d", fd), true
})

// stubCommand is the program and arguments a helper stub is exec'd with.
func stubCommand() (string, []string) {
	if p, ok := stubProgram(); ok {
		return p, []string{"ctr-cr-stub", StubArg}
	}
	return "/proc/self/exe", []string{"ctr-cr", StubArg}
}

// writeStub writes the stub program into the memfd fd of process pid.
func writeStub(pid, fd int) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open its memfd: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(stubELF()); err != nil {
		return fmt.Errorf("write the stub program into its memfd: %w", err)
	}
	return nil
}
