/*
 * a_creds.c - credentials and per-process/per-thread attributes of a root
 * process survive dump/restore.
 *
 * State (before ready), as root:
 *   - supplementary groups {10, 20, 30}; gids real 0, effective 20, saved 30
 *     (so fsgid 20); uids stay 0;
 *   - umask 027; cwd WORKDIR/sub (created);
 *   - rlimits: NOFILE 777/888, STACK soft 4 MiB, CORE 0/1 MiB,
 *     MSGQUEUE 12345/23456 (all 16 limits are recorded);
 *   - personality |= ADDR_NO_RANDOMIZE;
 *   - prctl: PR_SET_NAME "crcase-creds", PR_SET_CHILD_SUBREAPER 1,
 *     PR_SET_DUMPABLE 1, PR_SET_THP_DISABLE 1, PR_SET_TIMERSLACK 123456 ns;
 *   - a second thread named "crcase-thr" with timer slack 234567 ns.
 * (No PR_SET_PDEATHSIG: after restore the parent is ctr-cr, which exits.)
 *
 * Checks (after go): every value read back equal (getres[ug]id, fsgid,
 * getgroups, umask, getcwd and /proc/self/cwd, all getrlimit values,
 * personality, comm of both threads, the prctl getters, the Uid/Gid/Groups
 * lines of /proc/self/status); and behaviour: a new file gets mode 0640 and
 * gid 20, F_DUPFD works at fd 776 but not at 777.
 */
#include "case.h"

#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>

#define NRLIM 16

static struct rlimit rl0[NRLIM];
static char cwd0[PATH_MAX], ids0[1024];
static int pers0;
static volatile int stop;
static pid_t thr_tid;
static char thr_err[256];

/* Uid/Gid/Groups lines of /proc/self/status. */
static void ids_status(char *out, size_t size)
{
	char buf[4096], *line;
	size_t len = 0;

	if (case_read_file("/proc/self/status", buf, sizeof(buf)) < 0)
		case_fail("read status: %s", strerror(errno));
	out[0] = 0;
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		if (!strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4) ||
		    !strncmp(line, "Groups:", 7))
			len += snprintf(out + len, size - len, "%s; ", line);
}

static void *thr_main(void *arg)
{
	char name[32];

	(void)arg;
	thr_tid = (pid_t)syscall(SYS_gettid);
	if (prctl(PR_SET_TIMERSLACK, 234567UL, 0, 0, 0))
		case_fail("thread PR_SET_TIMERSLACK: %s", strerror(errno));
	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST))
		case_sleep_ms(10);
	/* After go: per-thread attributes. */
	if (prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != 234567)
		snprintf(thr_err, sizeof(thr_err), "thread timer slack %d",
			 prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0));
	else if (prctl(PR_GET_NAME, name, 0, 0, 0) || strcmp(name, "crcase-thr"))
		snprintf(thr_err, sizeof(thr_err), "thread name %s", name);
	return NULL;
}

int main(int argc, char **argv)
{
	static const gid_t groups[] = { 10, 20, 30 };
	struct rlimit rl;
	gid_t gl[64], rg, eg, sg;
	uid_t ru, eu, su;
	char buf[PATH_MAX], sub[PATH_MAX + 8], ids1[1024], name[32];
	pthread_t th;
	struct stat st;
	int i, n, v, fd;
	mode_t m;

	case_init(argc, argv);

	if (setgroups(3, groups))
		case_fail("setgroups: %s", strerror(errno));
	umask(027);
	snprintf(sub, sizeof(sub), "%s/sub", case_workdir);
	if (mkdir(sub, 0777) || chdir(sub))
		case_fail("mkdir/chdir %s: %s", sub, strerror(errno));
	if (!getcwd(cwd0, sizeof(cwd0)))
		case_fail("getcwd: %s", strerror(errno));

	rl = (struct rlimit){ 777, 888 };
	if (setrlimit(RLIMIT_NOFILE, &rl))
		case_fail("RLIMIT_NOFILE: %s", strerror(errno));
	getrlimit(RLIMIT_STACK, &rl);
	rl.rlim_cur = 4 << 20;
	if (setrlimit(RLIMIT_STACK, &rl))
		case_fail("RLIMIT_STACK: %s", strerror(errno));
	rl = (struct rlimit){ 0, 1 << 20 };
	if (setrlimit(RLIMIT_CORE, &rl))
		case_fail("RLIMIT_CORE: %s", strerror(errno));
	rl = (struct rlimit){ 12345, 23456 };
	if (setrlimit(RLIMIT_MSGQUEUE, &rl))
		case_fail("RLIMIT_MSGQUEUE: %s", strerror(errno));
	for (i = 0; i < NRLIM; i++)
		getrlimit(i, &rl0[i]);

	if (personality(personality(0xffffffff) | ADDR_NO_RANDOMIZE) == -1)
		case_fail("personality: %s", strerror(errno));
	pers0 = personality(0xffffffff);

	if (prctl(PR_SET_NAME, "crcase-creds", 0, 0, 0) ||
	    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) ||
	    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) ||
	    prctl(PR_SET_TIMERSLACK, 123456UL, 0, 0, 0))
		case_fail("prctl: %s", strerror(errno));

	if (pthread_create(&th, NULL, thr_main, NULL))
		case_fail("pthread_create");
	if (pthread_setname_np(th, "crcase-thr"))
		case_fail("pthread_setname_np");
	while (!thr_tid)
		case_sleep_ms(1);

	/* Gids last: everything above needed nothing from them. */
	if (setresgid(0, 20, 30))
		case_fail("setresgid: %s", strerror(errno));
	/* Changing the egid cleared "dumpable": set it (back) now. */
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
		case_fail("PR_SET_DUMPABLE: %s", strerror(errno));
	ids_status(ids0, sizeof(ids0));
	case_log("%s", ids0);
	case_ready();
	case_wait_go();

	/* Identity. */
	if (getresuid(&ru, &eu, &su) || ru || eu || su)
		case_fail("uids %d/%d/%d, want 0/0/0", ru, eu, su);
	if (getresgid(&rg, &eg, &sg) || rg != 0 || eg != 20 || sg != 30)
		case_fail("gids %d/%d/%d, want 0/20/30", rg, eg, sg);
	if ((v = setfsgid(-1)) != 20)
		case_fail("fsgid %d, want 20", v);
	n = getgroups(64, gl);
	if (n != 3 || gl[0] != 10 || gl[1] != 20 || gl[2] != 30)
		case_fail("groups: %d entries (%d %d %d)", n,
			  n > 0 ? (int)gl[0] : -1, n > 1 ? (int)gl[1] : -1,
			  n > 2 ? (int)gl[2] : -1);
	ids_status(ids1, sizeof(ids1));
	if (strcmp(ids0, ids1))
		case_fail("status: %s, was %s", ids1, ids0);

	/* Filesystem context. */
	m = umask(022);
	umask(m);
	if (m != 027)
		case_fail("umask %#o, want 027", m);
	if (!getcwd(buf, sizeof(buf)) || strcmp(buf, cwd0))
		case_fail("cwd %s, want %s", buf, cwd0);
	n = readlink("/proc/self/cwd", buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	if (strcmp(buf, cwd0))
		case_fail("/proc/self/cwd %s, want %s", buf, cwd0);

	/* Limits and personality. */
	for (i = 0; i < NRLIM; i++) {
		getrlimit(i, &rl);
		if (rl.rlim_cur != rl0[i].rlim_cur || rl.rlim_max != rl0[i].rlim_max)
			case_fail("rlimit %d: %llu/%llu, was %llu/%llu", i,
				  (unsigned long long)rl.rlim_cur,
				  (unsigned long long)rl.rlim_max,
				  (unsigned long long)rl0[i].rlim_cur,
				  (unsigned long long)rl0[i].rlim_max);
	}
	if (personality(0xffffffff) != pers0)
		case_fail("personality %#x, was %#x", personality(0xffffffff), pers0);

	/* prctl attributes. */
	if (prctl(PR_GET_NAME, name, 0, 0, 0) || strcmp(name, "crcase-creds"))
		case_fail("comm %s", name);
	if (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) || v != 1)
		case_fail("child subreaper %d", v);
	if ((v = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) != 1)
		case_fail("dumpable %d", v);
	if ((v = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)) != 1)
		case_fail("THP disable %d", v);
	if ((v = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)) != 123456)
		case_fail("timer slack %d", v);
	__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(th, NULL);
	if (thr_err[0])
		case_fail("%s", thr_err);

	/* Behaviour: umask and fsgid apply to new files; NOFILE applies. */
	fd = open("newfile", O_CREAT | O_EXCL | O_WRONLY, 0666);
	if (fd < 0 || fstat(fd, &st))
		case_fail("create newfile: %s", strerror(errno));
	close(fd);
	if ((st.st_mode & 07777) != 0640 || st.st_gid != 20)
		case_fail("newfile mode %#o gid %d, want 0640 gid 20",
			  st.st_mode & 07777, st.st_gid);
	if ((fd = fcntl(1, F_DUPFD, 776)) != 776)
		case_fail("F_DUPFD 776: %d (%s)", fd, strerror(errno));
	close(fd);
	if (fcntl(1, F_DUPFD, 777) != -1 || errno != EINVAL)
		case_fail("F_DUPFD 777 not refused by RLIMIT_NOFILE 777");
	case_pass();
}
