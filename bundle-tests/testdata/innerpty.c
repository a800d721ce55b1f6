// innerpty: a pty pair of the container's own devpts, both ends held by
// this process (as tmux or script would hold them). Ten times a second a
// line goes in at the master and must come out of the slave unchanged;
// the number of good round trips goes to /tmp/count. A bad one writes
// -1 and stops counting.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static void put(long n) {
	char b[32];
	int fd = open("/tmp/count.new", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		exit(1);
	int l = snprintf(b, sizeof b, "%ld\n", n);
	if (write(fd, b, l) != l)
		exit(1);
	close(fd);
	rename("/tmp/count.new", "/tmp/count");
}

int main(void) {
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		return 1;
	int s = open(ptsname(m), O_RDWR | O_NOCTTY);
	if (s < 0)
		return 1;
	struct termios t;
	tcgetattr(s, &t);
	t.c_lflag &= ~ECHO; // the master reads nothing back
	tcsetattr(s, TCSANOW, &t);
	for (long i = 1;; i++) {
		char want[32], got[64];
		int l = snprintf(want, sizeof want, "line %ld\n", i);
		if (write(m, want, l) != l) {
			put(-1);
			return 1;
		}
		ssize_t r = read(s, got, sizeof got);
		if (r != l || memcmp(got, want, l) != 0) {
			put(-1);
			return 1;
		}
		put(i);
		usleep(100000);
	}
}
