/*
 * a_membarrier: membarrier registrations survive C/R.
 *
 * The process registers PRIVATE_EXPEDITED, PRIVATE_EXPEDITED_SYNC_CORE,
 * PRIVATE_EXPEDITED_RSEQ (when the kernel offers them) and
 * GLOBAL_EXPEDITED, with two threads running. After the restores
 * MEMBARRIER_CMD_GET_REGISTRATIONS must give the same set and each
 * expedited command must succeed (an unregistered one fails with EPERM).
 */
#include "case.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define CMD_GET_REGISTRATIONS (1 << 9)

static long mb(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

static void *spin(void *arg)
{
	(void)arg;
	for (;;)
		case_sleep_ms(5);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct {
		int reg, cmd;
		const char *name;
	} cmds[] = {
		{ MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
		  MEMBARRIER_CMD_PRIVATE_EXPEDITED, "PRIVATE_EXPEDITED" },
		{ MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
		  MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, "SYNC_CORE" },
		{ MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
		  MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, "RSEQ" },
		{ MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
		  MEMBARRIER_CMD_GLOBAL_EXPEDITED, "GLOBAL_EXPEDITED" },
	};
	long avail, regs, got;
	pthread_t th;
	unsigned i;

	case_init(argc, argv);
	avail = mb(MEMBARRIER_CMD_QUERY);
	CHECK(avail >= 0, "membarrier query: %s", strerror(errno));
	regs = mb(CMD_GET_REGISTRATIONS);
	CHECK(regs == 0, "registrations at start: %ld (%s)", regs,
	      strerror(errno));
	CHECK(pthread_create(&th, NULL, spin, NULL) == 0, "pthread_create");
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!(avail & cmds[i].reg))
			continue;
		CHECK(mb(cmds[i].reg) == 0, "register %s: %s", cmds[i].name,
		      strerror(errno));
		CHECK(mb(cmds[i].cmd) == 0, "%s: %s", cmds[i].name,
		      strerror(errno));
	}
	regs = mb(CMD_GET_REGISTRATIONS);
	CHECK(regs > 0, "registrations: %ld (%s)", regs, strerror(errno));
	case_log("registrations %#lx", regs);
	case_ready();

	case_wait_go();
	got = mb(CMD_GET_REGISTRATIONS);
	CHECK(got == regs, "registrations after restore %#lx, want %#lx", got,
	      regs);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!(avail & cmds[i].reg))
			continue;
		CHECK(mb(cmds[i].cmd) == 0, "after restore: %s: %s",
		      cmds[i].name, strerror(errno));
	}
	case_pass();
}
