/*
 * e_anonfds.c - timerfds, a signalfd and an inotify instance survive
 * dump/restore.
 *
 * State (before ready), at fixed fds:
 *   60 periodic timerfd, CLOCK_MONOTONIC, 20 ms, TFD_NONBLOCK;
 *   61 one-shot timerfd, CLOCK_MONOTONIC, 3 s, armed right before ready;
 *   62 periodic timerfd, 5 ms, never read: ~100 expirations pending;
 *   63 one-shot timerfd, CLOCK_BOOTTIME, 1 ms, expired: 1 expiration pending;
 *   64 CLOCK_REALTIME timerfd, TFD_TIMER_ABSTIME at now + 60 s, 1 s period;
 *   65 CLOCK_MONOTONIC timerfd, TFD_TIMER_ABSTIME at now + 60 s (restored
 *      as absolute on the time left: the time in the image does not count);
 *   66 signalfd for SIGUSR1 (blocked), SFD_NONBLOCK, one SIGUSR1 queued
 *      with sigqueue (value 1234);
 *   67 inotify (IN_NONBLOCK) watching WORKDIR (IN_CREATE|IN_DELETE, wd 1),
 *      sub1 (IN_CREATE|IN_DELETE, wd 2) and sub3 (IN_CREATE, wd 4: wd 3,
 *      on sub2, was removed), with one event queued (lost on restore).
 *
 * Checks (after go): the 20 ms timer fires at 40-160 % of its rate over
 * 400 ms; the one-shot has at most 3 s left and fires when timerfd_gettime
 * says (if the cycles took longer than its 3 s, it shows one expiration);
 * the pending expirations read back (>= those due at ready, <= those due
 * now); the absolute timers keep their deadline and settime flags; the
 * signalfd returns the queued SIGUSR1 with our pid and value, and a new
 * one; the inotify wds are the same (3 is free), and events made after
 * restore arrive with them. Every fd keeps its O_NONBLOCK.
 */
#include "case.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>

#define MS 1000000LL

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

enum { TP = 60, TO, TT, TX, TR, TM, SF, IN };

static void place(int fd, int want, const char *what)
{
	CHECK(fd >= 0, "%s: %s", what, strerror(errno));
	CHECK(dup2(fd, want) == want, "dup2 %s: %s", what, strerror(errno));
	close(fd);
}

static long long ts_ns(struct timespec ts)
{
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timespec ns_ts(long long ns)
{
	struct timespec ts = { ns / 1000000000LL, ns % 1000000000LL };

	return ts;
}

static long long clock_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return ts_ns(ts);
}

static void arm(int fd, int flags, long long value, long long interval)
{
	struct itimerspec its = { ns_ts(interval), ns_ts(value) };

	CHECK(timerfd_settime(fd, flags, &its, NULL) == 0, "timerfd_settime %d: %s", fd, strerror(errno));
}

/* left returns the time left on a timer and its interval. */
static long long left(int fd, long long *interval)
{
	struct itimerspec its;

	CHECK(timerfd_gettime(fd, &its) == 0, "timerfd_gettime %d: %s", fd, strerror(errno));
	if (interval)
		*interval = ts_ns(its.it_interval);
	return ts_ns(its.it_value);
}

/* expirations reads a non-blocking timerfd: 0 when none. */
static uint64_t expirations(int fd)
{
	uint64_t n = 0;

	if (read(fd, &n, 8) != 8) {
		CHECK(errno == EAGAIN, "read timerfd %d: %s", fd, strerror(errno));
		return 0;
	}
	return n;
}

static int nonblock(int fd)
{
	return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
}

/* fdinfo_has reports whether /proc/self/fdinfo/fd contains text. */
static int fdinfo_has(int fd, const char *text)
{
	char path[64], buf[4096];

	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	CHECK(case_read_file(path, buf, sizeof buf) > 0, "read %s", path);
	return strstr(buf, text) != NULL;
}

static long long t_ready_mono, t_armed_tt, t_deadline_rt, t_deadline_mono;

static void check_timers(void)
{
	long long iv, l;

	CHECK(nonblock(TP) && !nonblock(TO) && nonblock(TT), "timerfd O_NONBLOCK flags changed");
	CHECK(fdinfo_has(TP, "clockid: 1") && fdinfo_has(TX, "clockid: 7") && fdinfo_has(TR, "clockid: 0"),
	      "timerfd clocks changed");

	/* 20 ms periodic: rate over 400 ms */
	left(TP, &iv);
	CHECK(iv == 20 * MS, "periodic interval %lld ns, want 20 ms", iv);
	expirations(TP);
	long long t1 = case_now();
	case_sleep_ms(400);
	uint64_t n = expirations(TP);
	long long t2 = case_now();
	double want = (double)(t2 - t1) / (20 * MS);
	case_log("periodic: %llu expirations in %lld ms (%.1f expected)", (unsigned long long)n, (t2 - t1) / MS, want);
	CHECK(n >= 0.4 * want && n <= 1.6 * want + 1, "periodic timer: %llu expirations in %lld ms, expected about %.1f",
	      (unsigned long long)n, (t2 - t1) / MS, want);

	/* pending expirations of the 5 ms timer */
	uint64_t due_ready = (uint64_t)((t_ready_mono - t_armed_tt) / (5 * MS));
	uint64_t due_now = (uint64_t)((case_now() - t_armed_tt) / (5 * MS)) + 1;
	n = expirations(TT);
	case_log("pending: %llu expirations read (>= %llu due at ready, <= %llu by now)", (unsigned long long)n,
		 (unsigned long long)due_ready, (unsigned long long)due_now);
	CHECK(n >= due_ready && n <= due_now, "pending expirations: read %llu, expected %llu..%llu",
	      (unsigned long long)n, (unsigned long long)due_ready, (unsigned long long)due_now);

	/* expired one-shot: exactly one expiration, then nothing */
	n = expirations(TX);
	CHECK(n == 1, "expired one-shot timer: read %llu expirations, want 1", (unsigned long long)n);
	CHECK(expirations(TX) == 0 && left(TX, &iv) == 0 && iv == 0, "expired one-shot timer re-armed");

	/* absolute timers: same deadline, same settime flags */
	l = left(TR, &iv);
	long long rt = t_deadline_rt - clock_ns(CLOCK_REALTIME);
	CHECK(iv == 1000 * MS && l > rt - 100 * MS && l <= rt + 100 * MS,
	      "CLOCK_REALTIME absolute timer: %lld ms left (interval %lld ms), deadline is in %lld ms", l / MS, iv / MS, rt / MS);
	CHECK(fdinfo_has(TR, "settime flags: 01"), "CLOCK_REALTIME timer lost TFD_TIMER_ABSTIME");
	l = left(TM, &iv);
	/* its time left is kept (the time spent in the image does not count) */
	long long mono = t_deadline_mono - clock_ns(CLOCK_MONOTONIC);
	CHECK(iv == 0 && l <= 60000 * MS && l >= mono - 100 * MS,
	      "CLOCK_MONOTONIC absolute timer: %lld ms left, deadline at arming in %lld ms", l / MS, mono / MS);
	CHECK(fdinfo_has(TM, "settime flags: 01"), "CLOCK_MONOTONIC timer lost TFD_TIMER_ABSTIME");

	/* 3 s one-shot: fires when it says */
	l = left(TO, &iv);
	CHECK(iv == 0 && l <= 3000 * MS, "one-shot timer: %lld ms left (interval %lld), armed for 3 s", l / MS, iv / MS);
	if (l == 0) {
		case_log("one-shot: expired during the cycles");
		n = expirations(TO); /* blocking fd, but it has expired */
		CHECK(n == 1, "expired one-shot: %llu expirations", (unsigned long long)n);
		return;
	}
	struct pollfd p = { .fd = TO, .events = POLLIN };
	t1 = case_now();
	CHECK(poll(&p, 1, (int)(l / MS) + 2000) == 1, "one-shot timer with %lld ms left did not fire", l / MS);
	long long fired = case_now() - t1;
	case_log("one-shot: %lld ms left after restore, fired after %lld ms", l / MS, fired / MS);
	CHECK(fired >= l - 20 * MS && fired <= l + l / 5 + 300 * MS, "one-shot timer with %lld ms left fired after %lld ms",
	      l / MS, fired / MS);
	CHECK(expirations(TO) == 1, "one-shot: not one expiration");
}

static void check_signalfd(void)
{
	struct signalfd_siginfo si;
	sigset_t pend;

	CHECK(nonblock(SF), "signalfd lost O_NONBLOCK");
	CHECK(fdinfo_has(SF, "sigmask:\t0000000000000200"), "signalfd mask changed");
	sigpending(&pend);
	CHECK(sigismember(&pend, SIGUSR1), "SIGUSR1 no longer pending");
	CHECK(read(SF, &si, sizeof si) == sizeof si, "signalfd read: %s", strerror(errno));
	CHECK(si.ssi_signo == SIGUSR1 && si.ssi_pid == (uint32_t)getpid() && si.ssi_code == SI_QUEUE && si.ssi_int == 1234,
	      "signalfd: signo %u pid %u code %d int %d", si.ssi_signo, si.ssi_pid, si.ssi_code, si.ssi_int);
	CHECK(read(SF, &si, sizeof si) < 0 && errno == EAGAIN, "signalfd: a second signal");
	CHECK(kill(getpid(), SIGUSR1) == 0, "kill");
	CHECK(read(SF, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR1 && si.ssi_code == SI_USER,
	      "signalfd: new SIGUSR1 not delivered");
}

/* next_event reads one event of the non-blocking inotify fd, skipping
 * those for "go" (the harness creates it). */
static struct inotify_event *next_event(char *buf, size_t size, size_t *off, ssize_t *len)
{
	for (;;) {
		if (*off >= (size_t)*len) {
			struct pollfd p = { .fd = IN, .events = POLLIN };

			CHECK(poll(&p, 1, 2000) == 1, "inotify: expected event missing");
			*len = read(IN, buf, size);
			CHECK(*len > 0, "inotify read: %s", strerror(errno));
			*off = 0;
		}
		struct inotify_event *ev = (struct inotify_event *)(buf + *off);
		*off += sizeof *ev + ev->len;
		if (ev->len && !strcmp(ev->name, "go"))
			continue;
		return ev;
	}
}

static void expect(char *buf, size_t size, size_t *off, ssize_t *len, int wd, uint32_t mask, const char *name)
{
	struct inotify_event *ev = next_event(buf, size, off, len);

	CHECK(ev->wd == wd && ev->mask == mask && ev->len && !strcmp(ev->name, name),
	      "inotify: got wd %d mask %#x name %s, want wd %d mask %#x name %s", ev->wd, ev->mask,
	      ev->len ? ev->name : "-", wd, mask, name);
}

static void check_inotify(void)
{
	char buf[4096] __attribute__((aligned(8)));
	size_t off = 0;
	ssize_t len = 0;

	CHECK(nonblock(IN), "inotify lost O_NONBLOCK");
	CHECK(fdinfo_has(IN, "inotify wd:1 ") && fdinfo_has(IN, "inotify wd:2 ") && fdinfo_has(IN, "inotify wd:4 ") &&
		      !fdinfo_has(IN, "inotify wd:3 "),
	      "inotify: watch descriptors changed");
	CHECK(inotify_rm_watch(IN, 3) < 0 && errno == EINVAL, "inotify: wd 3 exists");
	/* whatever was queued (the "go" file) */
	while (read(IN, buf, sizeof buf) > 0)
		;
	int fd = open("after", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0, "create after: %s", strerror(errno));
	close(fd);
	fd = open("sub1/x", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0, "create sub1/x: %s", strerror(errno));
	close(fd);
	CHECK(unlink("sub1/x") == 0, "unlink sub1/x");
	CHECK(mkdir("sub3/y", 0755) == 0, "mkdir sub3/y");
	CHECK(mkdir("sub2/z", 0755) == 0, "mkdir sub2/z"); /* not watched */
	CHECK(unlink("after") == 0, "unlink after");
	expect(buf, sizeof buf, &off, &len, 1, IN_CREATE, "after");
	expect(buf, sizeof buf, &off, &len, 2, IN_CREATE, "x");
	expect(buf, sizeof buf, &off, &len, 2, IN_DELETE, "x");
	expect(buf, sizeof buf, &off, &len, 4, IN_CREATE | IN_ISDIR, "y");
	expect(buf, sizeof buf, &off, &len, 1, IN_DELETE, "after");
	CHECK(off >= (size_t)len && read(IN, buf, sizeof buf) < 0 && errno == EAGAIN, "inotify: unexpected event");
}

int main(int argc, char **argv)
{
	sigset_t set;

	case_init(argc, argv);

	/* timers */
	place(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC), TP, "periodic timerfd");
	arm(TP, 0, 20 * MS, 20 * MS);
	place(timerfd_create(CLOCK_MONOTONIC, 0), TO, "one-shot timerfd");
	place(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), TT, "pending timerfd");
	t_armed_tt = case_now();
	arm(TT, 0, 5 * MS, 5 * MS);
	place(timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK), TX, "expired timerfd");
	arm(TX, 0, 1 * MS, 0);
	place(timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK), TR, "realtime timerfd");
	t_deadline_rt = clock_ns(CLOCK_REALTIME) + 60000 * MS;
	arm(TR, TFD_TIMER_ABSTIME, t_deadline_rt, 1000 * MS);
	place(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), TM, "monotonic absolute timerfd");
	t_deadline_mono = clock_ns(CLOCK_MONOTONIC) + 60000 * MS;
	arm(TM, TFD_TIMER_ABSTIME, t_deadline_mono, 0);

	/* signalfd with one SIGUSR1 queued */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0, "sigprocmask");
	place(signalfd(-1, &set, SFD_NONBLOCK), SF, "signalfd");
	CHECK(sigqueue(getpid(), SIGUSR1, (union sigval){ .sival_int = 1234 }) == 0, "sigqueue: %s", strerror(errno));

	/* inotify: wds 1, 2 and 4 */
	CHECK(mkdir("sub1", 0755) == 0 && mkdir("sub2", 0755) == 0 && mkdir("sub3", 0755) == 0, "mkdir: %s",
	      strerror(errno));
	place(inotify_init1(IN_NONBLOCK), IN, "inotify");
	int w1 = inotify_add_watch(IN, case_workdir, IN_CREATE | IN_DELETE);
	int w2 = inotify_add_watch(IN, "sub1", IN_CREATE | IN_DELETE);
	int w3 = inotify_add_watch(IN, "sub2", IN_CREATE);
	CHECK(inotify_rm_watch(IN, w3) == 0, "inotify_rm_watch: %s", strerror(errno));
	int w4 = inotify_add_watch(IN, "sub3", IN_CREATE);
	CHECK(w1 == 1 && w2 == 2 && w3 == 3 && w4 == 4, "wds %d %d %d %d", w1, w2, w3, w4);
	int fd = open("before", O_CREAT | O_WRONLY | O_CLOEXEC, 0644); /* a queued event */
	CHECK(fd >= 0, "create before");
	close(fd);

	case_sleep_ms(500); /* ~100 expirations of TT pending */
	arm(TO, 0, 3000 * MS, 0);
	t_ready_mono = case_now();
	case_log("timerfds %d-%d, signalfd %d, inotify %d", TP, TM, SF, IN);
	case_ready();
	case_wait_go();

	check_signalfd();
	check_inotify();
	check_timers();
	case_pass();
}
