/*
 * a_tls_threads.c - threads, TLS and a contended futex survive dump/restore.
 *
 * State: 8 pthreads. Each has a __thread counter (tls_count) and loops:
 * lock the shared mutex, check tls_count still equals its last published
 * value, do a little work while holding the lock (so that the others block
 * in futex_wait), add 1 to the shared total and to tls_count, publish
 * tls_count in contrib[i], unlock. Before "ready" each thread records
 * pthread_self(), gettid() and &tls_count, and the main thread snapshots the
 * counters.
 *
 * Checks (after go), in each thread: gettid(), pthread_self() and the TLS
 * address are unchanged; tls_count never went back (>= snapshot and equal to
 * the last published value every iteration) and keeps increasing (each thread
 * ends >= 1000 above its snapshot); in main: every thread is joinable and
 * returns its final tls_count == contrib[i]; the shared total == the sum of
 * the contributions; the mutex is free (trylock succeeds).
 */
#include "case.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>

#define NTHREADS 8
#define POST_GO_ITERS 1000

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t total; /* guarded by mu */

static __thread uint64_t tls_count;
static __thread uint64_t tls_magic; /* must keep its per-thread value */

struct slot {
	pthread_t self;
	pid_t tid;
	uint64_t *tls_addr;
	uint64_t contrib;   /* last published tls_count (atomic) */
	uint64_t snapshot;  /* contrib when main announced ready */
	uint64_t post_go;   /* iterations done after the go check */
	int recorded;       /* identity recorded */
	int checked;        /* post-go identity check done */
} __attribute__((aligned(64)));

static struct slot slots[NTHREADS];
static volatile int go_phase, stop;

static void *worker(void *arg)
{
	int i = (int)(intptr_t)arg;
	struct slot *s = &slots[i];
	volatile uint64_t sink = 0;
	int k;

	tls_magic = 0xabcd0000ULL + (uint64_t)i;
	s->self = pthread_self();
	s->tid = (pid_t)syscall(SYS_gettid);
	s->tls_addr = &tls_count;
	__atomic_store_n(&s->recorded, 1, __ATOMIC_RELEASE);

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&mu);
		if (tls_count != __atomic_load_n(&s->contrib, __ATOMIC_RELAXED))
			case_fail("thread %d: TLS counter %llu != published %llu",
				  i, (unsigned long long)tls_count,
				  (unsigned long long)s->contrib);
		for (k = 0; k < 200; k++) /* hold the lock a little */
			sink += (uint64_t)k * tls_count;
		total++;
		tls_count++;
		__atomic_store_n(&s->contrib, tls_count, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&mu);

		if (__atomic_load_n(&go_phase, __ATOMIC_ACQUIRE)) {
			if (!s->checked) {
				if ((pid_t)syscall(SYS_gettid) != s->tid)
					case_fail("thread %d: gettid %ld, was %d", i,
						  (long)syscall(SYS_gettid), s->tid);
				if (!pthread_equal(pthread_self(), s->self))
					case_fail("thread %d: pthread_self changed", i);
				if (&tls_count != s->tls_addr)
					case_fail("thread %d: TLS moved %p -> %p", i,
						  (void *)s->tls_addr,
						  (void *)&tls_count);
				if (tls_magic != 0xabcd0000ULL + (uint64_t)i)
					case_fail("thread %d: TLS magic %#llx", i,
						  (unsigned long long)tls_magic);
				if (tls_count < s->snapshot)
					case_fail("thread %d: TLS counter %llu below snapshot %llu",
						  i, (unsigned long long)tls_count,
						  (unsigned long long)s->snapshot);
				__atomic_store_n(&s->checked, 1, __ATOMIC_RELEASE);
			}
			__atomic_add_fetch(&s->post_go, 1, __ATOMIC_RELAXED);
		}
	}
	(void)sink;
	return (void *)(uintptr_t)tls_count;
}

int main(int argc, char **argv)
{
	pthread_t th[NTHREADS];
	uint64_t sum = 0;
	long long deadline;
	int i, done;

	case_init(argc, argv);
	for (i = 0; i < NTHREADS; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i))
			case_fail("pthread_create %d", i);

	/* Wait until every thread is identified and has made progress. */
	deadline = case_now() + 10000000000LL;
	for (;;) {
		done = 0;
		for (i = 0; i < NTHREADS; i++)
			done += __atomic_load_n(&slots[i].recorded, __ATOMIC_ACQUIRE) &&
				__atomic_load_n(&slots[i].contrib, __ATOMIC_RELAXED) >= 1000;
		if (done == NTHREADS)
			break;
		if (case_now() > deadline)
			case_fail("only %d threads made progress before ready", done);
		case_sleep_ms(5);
	}
	for (i = 0; i < NTHREADS; i++) {
		slots[i].snapshot = __atomic_load_n(&slots[i].contrib, __ATOMIC_RELAXED);
		case_log("thread %d: tid %d, tls %p, count %llu", i, slots[i].tid,
			 (void *)slots[i].tls_addr,
			 (unsigned long long)slots[i].snapshot);
	}
	case_ready();
	case_wait_go();

	/* Let every thread check itself and keep counting. */
	__atomic_store_n(&go_phase, 1, __ATOMIC_RELEASE);
	deadline = case_now() + 20000000000LL;
	for (;;) {
		done = 0;
		for (i = 0; i < NTHREADS; i++)
			done += __atomic_load_n(&slots[i].checked, __ATOMIC_ACQUIRE) &&
				__atomic_load_n(&slots[i].post_go, __ATOMIC_RELAXED) >=
					POST_GO_ITERS;
		if (done == NTHREADS)
			break;
		if (case_now() > deadline)
			case_fail("only %d threads progressed after go", done);
		case_sleep_ms(5);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);

	for (i = 0; i < NTHREADS; i++) {
		void *ret;
		int err = pthread_join(th[i], &ret);

		if (err)
			case_fail("pthread_join %d: %s", i, strerror(err));
		if ((uint64_t)(uintptr_t)ret != slots[i].contrib)
			case_fail("thread %d returned %llu, published %llu", i,
				  (unsigned long long)(uintptr_t)ret,
				  (unsigned long long)slots[i].contrib);
		if (slots[i].contrib < slots[i].snapshot + POST_GO_ITERS)
			case_fail("thread %d: counter %llu, want >= %llu + %d", i,
				  (unsigned long long)slots[i].contrib,
				  (unsigned long long)slots[i].snapshot,
				  POST_GO_ITERS);
		sum += slots[i].contrib;
	}
	if (sum != total)
		case_fail("shared total %llu != sum of contributions %llu",
			  (unsigned long long)total, (unsigned long long)sum);
	if (pthread_mutex_trylock(&mu) != 0)
		case_fail("mutex still locked after all threads ended");
	pthread_mutex_unlock(&mu);
	case_log("total %llu", (unsigned long long)total);
	case_pass();
}
