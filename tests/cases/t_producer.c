/*
 * t_producer: the data source of the real-program pipeline test
 * (sh -c 't_producer WORKDIR MIB | gzip -1 | sha256sum > WORKDIR/sum').
 *
 * Usage: t_producer WORKDIR|- MIB
 *
 * Writes exactly MIB MiB of deterministic, compressible text to stdout:
 * lines of words picked by a fixed PRNG, the same bytes on every run, so
 * the pipeline's result depends on nothing but MIB.
 *
 * With "-" it writes at full speed (the reference run). With a work
 * directory it paces itself so that the pipeline is mid-flight whenever the
 * test dumps it: the first 2 MiB at full speed, then "ready" on stderr
 * (the harness waits for that line in WORKDIR/out), then 32 KiB every
 * 10 ms, and never the last MiB before WORKDIR/go exists; after go, full
 * speed to the end. Exit 0, or 1 with a message on stderr.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (32 * 1024)

static const char *words[] = {
	"checkpoint", "restore", "process", "tree", "session", "group",
	"zombie", "pipe", "socket", "fifo", "memory", "page", "signal",
	"thread", "namespace", "parent", "child", "image", "kernel", "stub",
	"a", "the", "of", "and", "to", "in", "is", "it", "with", "for",
};

static uint64_t state = 0x243f6a8885a308d3ULL;

static uint64_t next(void)
{
	uint64_t x = (state += 0x9e3779b97f4a7c15ULL);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* fill puts the next len bytes of the text into buf. The text is an endless
 * sequence of lines; a word cut at the end of a chunk continues in the next
 * one (pending holds the rest). */
static void fill(char *buf, size_t len)
{
	static char pending[64];
	static size_t npending, ppos;
	size_t i = 0;

	while (i < len) {
		if (ppos == npending) {
			uint64_t r = next();
			const char *w = words[r % (sizeof(words) / sizeof(words[0]))];

			npending = (size_t)snprintf(pending, sizeof(pending), "%s%c",
						    w, (r >> 32) % 9 ? ' ' : '\n');
			if ((r >> 40) % 17 == 0) /* some numbers too */
				npending += (size_t)snprintf(pending + npending,
							     sizeof(pending) - npending,
							     "%u ", (unsigned)(r >> 48));
			ppos = 0;
		}
		buf[i++] = pending[ppos++];
	}
}

static void write_all(const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(1, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "t_producer: write: %s\n", strerror(errno));
			exit(1);
		}
		p += n;
		len -= (size_t)n;
	}
}

int main(int argc, char **argv)
{
	static char buf[CHUNK];
	char gofile[PATH_MAX];
	const struct timespec pause = { 0, 10 * 1000 * 1000 };
	uint64_t total, off;
	int paced, ready = 0, go = 0;

	if (argc != 3 || atoi(argv[2]) < 4) {
		fprintf(stderr, "usage: t_producer WORKDIR|- MIB (MIB >= 4)\n");
		return 2;
	}
	paced = strcmp(argv[1], "-") != 0;
	snprintf(gofile, sizeof(gofile), "%s/go", argv[1]);
	total = (uint64_t)atoi(argv[2]) << 20;

	for (off = 0; off < total; off += CHUNK) {
		if (paced && !go) {
			if (!ready && off >= (2 << 20)) {
				fputs("ready\n", stderr);
				ready = 1;
			}
			go = access(gofile, F_OK) == 0;
			while (ready && !go && off >= total - (1 << 20)) {
				nanosleep(&pause, NULL);
				go = access(gofile, F_OK) == 0;
			}
			if (ready && !go)
				nanosleep(&pause, NULL);
		}
		fill(buf, CHUNK);
		write_all(buf, CHUNK);
	}
	return 0;
}
