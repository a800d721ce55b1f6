/*
 * m_aio: a process with an aio context (io_setup: the "/[aio]" ring
 * mapping), one request completed and reaped before "ready".  The dump
 * must refuse it by name (TestNegative_MemAio); the context must still
 * work after the failed dump: a read submitted after "go" completes.
 * Built with -DPOLL_PENDING (TestNegative_MemAioInFlight) it also has a
 * request in flight, an IOCB_CMD_POLL on the read end of an empty pipe:
 * after the refused dump it is still pending, and completes (POLLIN)
 * once the pipe gets data.
 */
#define _GNU_SOURCE
#include "case.h"
#include "m_mem.h"

#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/syscall.h>

static long io_setup(unsigned n, aio_context_t *ctx) { return syscall(SYS_io_setup, n, ctx); }
static long io_submit(aio_context_t c, long n, struct iocb **b) { return syscall(SYS_io_submit, c, n, b); }
static long io_getevents(aio_context_t c, long mn, long n, struct io_event *e)
{
	return syscall(SYS_io_getevents, c, mn, n, e, NULL);
}

/* one pread of 8 bytes of fd through ctx; returns the bytes read */
static long aio_read8(aio_context_t ctx, int fd, char *buf)
{
	struct iocb cb = {0}, *cbs[1] = {&cb};
	struct io_event ev;
	cb.aio_fildes = fd;
	cb.aio_lio_opcode = IOCB_CMD_PREAD;
	cb.aio_buf = (uintptr_t)buf;
	cb.aio_nbytes = 8;
	CHECK(io_submit(ctx, 1, cbs) == 1, "io_submit: %s", strerror(errno));
	CHECK(io_getevents(ctx, 1, 1, &ev) == 1, "io_getevents: %s", strerror(errno));
	return (long)ev.res;
}

int main(int argc, char **argv)
{
	char path[PATH_MAX + 16], buf[8];
	aio_context_t ctx = 0;

	case_init(argc, argv);
	snprintf(path, sizeof path, "%s/aio.dat", case_workdir);
	m_write_file(path, "aio-data", 8);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	CHECK(io_setup(64, &ctx) == 0, "io_setup: %s", strerror(errno));
	CHECK(aio_read8(ctx, fd, buf) == 8 && memcmp(buf, "aio-data", 8) == 0,
	      "setup: aio read");
	case_log("aio context %#lx", (unsigned long)ctx);
#ifdef POLL_PENDING
	int p[2];
	struct iocb pcb = {0}, *pcbs[1] = {&pcb};
	struct io_event pev;
	struct timespec zero = {0, 0};
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
	pcb.aio_fildes = p[0];
	pcb.aio_lio_opcode = IOCB_CMD_POLL;
	pcb.aio_buf = POLLIN;
	pcb.aio_data = 0x5eed;
	CHECK(io_submit(ctx, 1, pcbs) == 1, "io_submit poll: %s", strerror(errno));
	CHECK(syscall(SYS_io_getevents, ctx, 0, 1, &pev, &zero) == 0, "the poll completed at once");
#endif

	case_ready();
	case_wait_go();
#ifdef POLL_PENDING
	CHECK(syscall(SYS_io_getevents, ctx, 0, 1, &pev, &zero) == 0, "the poll completed during the refused dump");
	CHECK(write(p[1], "x", 1) == 1, "write: %s", strerror(errno));
	CHECK(io_getevents(ctx, 1, 1, &pev) == 1 && pev.data == 0x5eed && (pev.res & POLLIN),
	      "the pending poll did not complete with POLLIN (res %lld)", (long long)pev.res);
#endif

	memset(buf, 0, sizeof buf);
	CHECK(aio_read8(ctx, fd, buf) == 8 && memcmp(buf, "aio-data", 8) == 0,
	      "aio read after go");
	case_pass();
}
