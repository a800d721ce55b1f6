/*
 * t_pty: a pseudo-terminal pair with its state, queued data both ways, a
 * session whose controlling terminal it is and a foreground group.
 *
 *   R   case root: holds the master M (packet mode on, raw termios with
 *       VMIN 1 VTIME 5 at 57600 baud, window 101x37 640x480 pixels) and a
 *       slave of its own
 *   `-- C   setsid(), opens the slave without O_NOCTTY: its controlling
 *       |   terminal; writes OUT to the slave (not read by R before go)
 *       `-- G   own process group, the terminal's foreground group
 *
 * Before ready R writes IN to M (not read by C before go) and waits until
 * both queues hold their bytes.
 *
 * After go: R checks from /proc that C and G have the slave as controlling
 * terminal (tty_nr) with G's group in the foreground (tpgid), that M is the
 * same index, unlocked, in packet mode, with the same termios and window
 * size, and reads OUT exactly once from M. C checks its terminal
 * (ttyname, tcgetsid, tcgetpgrp). G checks it is the foreground group,
 * reads IN exactly once and tells R, which switches the line to canonical
 * mode with echo and writes "hello\n": R reads the echo "hello\r\n" from
 * M, G reads the line "hello\n", and everyone exits 0.
 */
#include "t_tree.h"

#include <sys/ioctl.h>
#include <termios.h>

#define IN "input-queued-5678\001\003\025"
#define OUT "output-queued-1234\r\n"

static char slave_name[64];

/* pkt_read reads len data bytes from the master in packet mode: each read
 * starts with a TIOCPKT_DATA byte (a status byte alone is skipped). */
static void pkt_read(int m, char *buf, size_t len, const char *what)
{
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;
	size_t got = 0;
	char tmp[256];

	while (got < len) {
		struct pollfd pfd = { .fd = m, .events = POLLIN };
		ssize_t n;

		CHECK(case_now() < end, "%s: %zu of %zu bytes after %d ms", what,
		      got, len, TT_TIMEOUT_MS);
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = read(m, tmp, sizeof(tmp) < len - got + 1 ? sizeof(tmp) : len - got + 1);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		CHECK(n > 0, "%s: read: %zd %s", what, n, strerror(errno));
		if (tmp[0] != TIOCPKT_DATA) {
			case_log("%s: packet status %#x", what, tmp[0]);
			continue;
		}
		memcpy(buf + got, tmp + 1, (size_t)n - 1);
		got += (size_t)n - 1;
	}
}

/* nothing_more requires that fd has nothing to read for 100 ms. */
static void nothing_more(int fd, const char *what)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	CHECK(poll(&pfd, 1, 100) == 0, "%s: more data than expected (revents %#x)",
	      what, pfd.revents);
}

/* tty_of reads tty_nr and tpgid of pid from /proc/pid/stat. */
static void tty_of(pid_t pid, unsigned *tty_nr, int *tpgid)
{
	char path[64], buf[1024], *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	CHECK(case_read_file(path, buf, sizeof(buf)) > 0, "read %s", path);
	p = strrchr(buf, ')');
	CHECK(p && sscanf(p + 2, "%*c %*d %*d %*d %u %d", tty_nr, tpgid) == 2,
	      "parse %s", path);
}

static void same_termios(const struct termios *a, const struct termios *b)
{
	CHECK(a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag &&
		      a->c_cflag == b->c_cflag && a->c_lflag == b->c_lflag,
	      "termios flags i %#x o %#x c %#x l %#x, want i %#x o %#x c %#x l %#x",
	      a->c_iflag, a->c_oflag, a->c_cflag, a->c_lflag, b->c_iflag,
	      b->c_oflag, b->c_cflag, b->c_lflag);
	CHECK(memcmp(a->c_cc, b->c_cc, sizeof(a->c_cc)) == 0,
	      "termios c_cc differ (VMIN %d VTIME %d, want %d %d)",
	      a->c_cc[VMIN], a->c_cc[VTIME], b->c_cc[VMIN], b->c_cc[VTIME]);
	CHECK(cfgetispeed(a) == cfgetispeed(b) && cfgetospeed(a) == cfgetospeed(b),
	      "speed %u/%u, want %u/%u", cfgetispeed(a), cfgetospeed(a),
	      cfgetispeed(b), cfgetospeed(b));
}

/* G, the foreground group, reads the terminal (a background read would
 * fail: C's group is orphaned). */
static void run_g(int s, int inok)
{
	char buf[64], line[16];

	case_wait_go();
	CHECK(tcgetpgrp(s) == getpgrp(), "G: foreground group %d, want %d",
	      (int)tcgetpgrp(s), (int)getpgrp());
	tt_read_full(s, buf, strlen(IN), "G: queued input");
	CHECK(memcmp(buf, IN, strlen(IN)) == 0, "G: queued input %.*s",
	      (int)strlen(IN), buf);
	nothing_more(s, "G: queued input");
	tt_write_full(inok, "k", 1, "G: input ok");
	/* canonical now (R switched it): one line */
	tt_read_full(s, line, 6, "G: line");
	CHECK(memcmp(line, "hello\n", 6) == 0, "G: line %.6s", line);
	_exit(0);
}

static void run_c(int ready, int inok)
{
	pid_t g;
	int s;

	CHECK(setsid() == getpid(), "C: setsid: %s", strerror(errno));
	s = open(slave_name, O_RDWR);
	CHECK(s >= 0, "C: open %s: %s", slave_name, strerror(errno));
	CHECK(tcgetsid(s) == getpid(), "C: %s is not its terminal", slave_name);
	g = tt_fork();
	if (g == 0) {
		setpgid(0, 0);
		run_g(s, inok);
	}
	setpgid(g, g);
	CHECK(tcsetpgrp(s, g) == 0, "C: tcsetpgrp: %s", strerror(errno));
	tt_write_full(s, OUT, strlen(OUT), "C: queued output");
	tt_write_full(ready, "r", 1, "C: ready");

	case_wait_go();
	CHECK(strcmp(ttyname(s), slave_name) == 0, "C: ttyname %s, want %s",
	      ttyname(s), slave_name);
	CHECK(tcgetsid(s) == getpid(), "C: tcgetsid %d", (int)tcgetsid(s));
	CHECK(tcgetpgrp(s) == g, "C: foreground group %d, want %d",
	      (int)tcgetpgrp(s), (int)g);
	tt_expect_exit(g, 0, "G");
	_exit(0);
}

int main(int argc, char **argv)
{
	struct termios want, got;
	struct winsize ws = { .ws_row = 37, .ws_col = 101, .ws_xpixel = 640, .ws_ypixel = 480 },
		       gws;
	int m, rs, one = 1, ready[2], inok[2], n, idx, idx2;
	unsigned tty_nr;
	int tpgid;
	char buf[64];
	pid_t root, c, g, pids[3];
	struct stat st;
	char *name;

	case_init(argc, argv);
	root = getpid();
	m = posix_openpt(O_RDWR | O_NOCTTY);
	CHECK(m >= 0, "posix_openpt: %s", strerror(errno));
	CHECK(grantpt(m) == 0 && unlockpt(m) == 0, "unlockpt: %s", strerror(errno));
	name = ptsname(m);
	CHECK(name, "ptsname");
	snprintf(slave_name, sizeof(slave_name), "%s", name);
	CHECK(ioctl(m, TIOCGPTN, &idx) == 0, "TIOCGPTN: %s", strerror(errno));
	CHECK(tcgetattr(m, &want) == 0, "tcgetattr");
	cfmakeraw(&want);
	want.c_cc[VMIN] = 1;
	want.c_cc[VTIME] = 5;
	cfsetispeed(&want, B57600);
	cfsetospeed(&want, B57600);
	CHECK(tcsetattr(m, TCSANOW, &want) == 0, "tcsetattr: %s", strerror(errno));
	CHECK(tcgetattr(m, &want) == 0, "tcgetattr");
	CHECK(ioctl(m, TIOCSWINSZ, &ws) == 0, "TIOCSWINSZ: %s", strerror(errno));
	CHECK(ioctl(m, TIOCPKT, &one) == 0, "TIOCPKT: %s", strerror(errno));
	rs = open(slave_name, O_RDWR | O_NOCTTY);
	CHECK(rs >= 0, "open %s: %s", slave_name, strerror(errno));
	tt_pipe(ready);
	tt_pipe(inok);

	c = tt_fork();
	if (c == 0)
		run_c(ready[1], inok[1]);
	tt_read_full(ready[0], buf, 1, "R: C ready");
	tt_write_full(m, IN, strlen(IN), "R: queued input");
	for (n = 0; n < 2000; n++) {
		int in = 0, out = 0;

		ioctl(rs, FIONREAD, &in);
		ioctl(m, FIONREAD, &out);
		if (in == (int)strlen(IN) && out == (int)strlen(OUT))
			break;
		case_sleep_ms(5);
	}
	CHECK(n < 2000, "the queues do not fill up");
	{
		/* G is C's only child: find it through /proc */
		char path[64], list[64];

		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)c, (int)c);
		CHECK(case_read_file(path, list, sizeof(list)) > 0, "read %s", path);
		g = atoi(list);
		CHECK(g > 0, "C has no child");
	}
	tty_of(c, &tty_nr, &tpgid);
	CHECK(tpgid == g, "before ready: tpgid of C %d, want %d", tpgid, (int)g);
	case_log("pty %s (index %d), C %d, G %d, tty_nr %#x", slave_name, idx,
		 (int)c, (int)g, tty_nr);
	pids[0] = root;
	pids[1] = c;
	pids[2] = g;
	tt_write_tree(pids, 3);
	case_ready();

	case_wait_go();
	CHECK(stat(slave_name, &st) == 0, "stat %s: %s", slave_name, strerror(errno));
	tty_of(c, &tty_nr, &tpgid);
	CHECK(tty_nr == (unsigned)st.st_rdev, "C: tty_nr %#x, want %#x", tty_nr,
	      (unsigned)st.st_rdev);
	CHECK(tpgid == g, "C: tpgid %d, want %d", tpgid, (int)g);
	tty_of(g, &tty_nr, &tpgid);
	CHECK(tty_nr == (unsigned)st.st_rdev, "G: tty_nr %#x", tty_nr);
	tty_of(root, &tty_nr, &tpgid);
	CHECK(tty_nr == 0, "R has a controlling terminal (%#x)", tty_nr);
	CHECK(ioctl(m, TIOCGPTN, &idx2) == 0 && idx2 == idx, "index %d, want %d",
	      idx2, idx);
	CHECK(strcmp(ptsname(m), slave_name) == 0, "ptsname %s", ptsname(m));
	CHECK(ioctl(m, TIOCGPKT, &n) == 0 && n == 1, "packet mode %d", n);
	CHECK(ioctl(m, TIOCGPTLCK, &n) == 0 && n == 0, "locked %d", n);
	CHECK(tcgetattr(m, &got) == 0, "tcgetattr: %s", strerror(errno));
	same_termios(&got, &want);
	CHECK(ioctl(m, TIOCGWINSZ, &gws) == 0, "TIOCGWINSZ");
	CHECK(gws.ws_row == ws.ws_row && gws.ws_col == ws.ws_col &&
		      gws.ws_xpixel == ws.ws_xpixel && gws.ws_ypixel == ws.ws_ypixel,
	      "window %dx%d (%dx%d), want %dx%d", gws.ws_col, gws.ws_row,
	      gws.ws_xpixel, gws.ws_ypixel, ws.ws_col, ws.ws_row);
	pkt_read(m, buf, strlen(OUT), "R: queued output");
	CHECK(memcmp(buf, OUT, strlen(OUT)) == 0, "R: queued output %.*s",
	      (int)strlen(OUT), buf);
	nothing_more(m, "R: queued output");

	tt_read_full(inok[0], buf, 1, "R: C read its input");
	got.c_lflag |= ICANON | ECHO;
	got.c_iflag |= ICRNL;
	got.c_oflag |= OPOST | ONLCR;
	CHECK(tcsetattr(m, TCSANOW, &got) == 0, "tcsetattr canonical: %s",
	      strerror(errno));
	tt_write_full(m, "hello\n", 6, "R: hello");
	pkt_read(m, buf, 7, "R: echo");
	CHECK(memcmp(buf, "hello\r\n", 7) == 0, "R: echo %.7s", buf);
	tt_expect_exit(c, 0, "C");
	tt_no_children();
	case_pass();
}
