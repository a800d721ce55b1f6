/*
 * m_aio: a process with an aio context (io_setup: the "/[aio]" ring
 * mapping), one request completed and reaped before "ready".  The dump
 * must refuse it by name (TestNegative_MemAio); the context must still
 * work after the failed dump: a read submitted after "go" completes.
 */
#define _GNU_SOURCE
#include "case.h"
#include "m_mem.h"

#include <linux/aio_abi.h>
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

	case_ready();
	case_wait_go();

	memset(buf, 0, sizeof buf);
	CHECK(aio_read8(ctx, fd, buf) == 8 && memcmp(buf, "aio-data", 8) == 0,
	      "aio read after go");
	case_pass();
}
