/*
 * threads: a multi-threaded container init for TestRestore_Threads: three
 * threads count in their own slots, the main thread writes the sum to
 * /tmp/count ten times a second.
 */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static volatile unsigned long slots[3];

static void *worker(void *arg)
{
	volatile unsigned long *s = arg;

	for (;;) {
		(*s)++;
		usleep(1000);
	}
	return NULL;
}

int main(void)
{
	pthread_t t[3];

	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, worker, (void *)&slots[i]);
	for (unsigned long n = 1;; n++) {
		FILE *f = fopen("/tmp/count", "w");

		if (f) {
			fprintf(f, "%lu\n", n);
			fclose(f);
		}
		usleep(100000);
	}
}
