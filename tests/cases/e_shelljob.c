/*
 * e_shelljob.c - a job on a terminal: stdin/stdout/stderr are a pty slave.
 * The log (ready, PASS/FAIL) goes to WORKDIR/out, not to the terminal.
 * Each line read from the terminal is answered with "echo:<line>"; the line
 * "verify" checks that stdin and stdout are still terminals and that a
 * counter kept in memory went on, then ends the case.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2 || chdir(argv[1]))
		return 2;
	FILE *log = fopen("out", "a");
	if (!log)
		return 2;
	setvbuf(log, NULL, _IOLBF, 0);
	long lines = 0;
	fprintf(log, "log: tty %s\n", ttyname(0) ? ttyname(0) : "?");
	fprintf(log, "ready\n");
	char buf[256];
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf) - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(log, "FAIL: read from the terminal: %zd %s\n", n, strerror(errno));
			return 1;
		}
		buf[n] = 0;
		char *nl = strchr(buf, '\n');
		if (nl)
			*nl = 0;
		lines++;
		if (strcmp(buf, "verify") == 0) {
			if (!isatty(0) || !isatty(1)) {
				fprintf(log, "FAIL: stdio is no longer a terminal\n");
				return 1;
			}
			if (lines < 2) {
				fprintf(log, "FAIL: line counter %ld\n", lines);
				return 1;
			}
			dprintf(1, "bye\n");
			fprintf(log, "PASS\n");
			return 0;
		}
		dprintf(1, "echo:%s\n", buf);
	}
}
