/*
 * bench_util.h - helpers shared by bench_malloc.c and bench_sheaf.c.
 *
 * Header-only (static inline) so that each program stays one C file plus
 * the gbench shim.  Nothing here calls into sheaf: bench_malloc must run on
 * whatever malloc the process has (glibc, or a preloaded one).
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "gbench.h"

#define CACHE_LINE 64

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Use a fresh block the way a program would: write its first and last byte,
 * then let its address escape.  GCC and clang delete a malloc/free pair
 * whose block is never used (and -fno-builtin-malloc, which the build
 * passes, is not something a user's build can be relied on to have); the
 * asm barrier in gb_do_not_optimize() counts as a read of the block, so the
 * pair and the stores stay.  The last byte matters for large sizes: an
 * allocator that returns pages to the kernel on free() pays the page fault
 * here, as a real program would.
 */
static inline void touch(void *p, size_t size)
{
	unsigned char *b = p;

	b[0] = (unsigned char)size;
	b[size - 1] = 1;
	gb_do_not_optimize(p);
}

/* xorshift64*: fast, good enough for picking slots and sizes. */
static inline uint64_t rnd_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n) without a division. */
static inline uint32_t rnd_below(uint64_t *s, uint32_t n)
{
	return (uint32_t)(((rnd_next(s) >> 32) * n) >> 32);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/*
 * Waiting on another thread: spin briefly, then yield.  On a 2-core machine
 * with other load a waiter that never yields can keep the thread it waits
 * for off the CPU for a whole time slice.
 */
#define SPIN_LIMIT 128

static inline void spin_wait(unsigned *spins)
{
	if (++*spins < SPIN_LIMIT)
		cpu_relax();
	else
		sched_yield();
}

static inline void die_oom(void)
{
	fputs("bench: out of memory\n", stderr);
	abort();
}

static inline void *xmalloc(size_t size)
{
	void *p = malloc(size);

	if (!p)
		die_oom();
	return p;
}

static inline void start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int err = pthread_create(t, NULL, fn, arg);

	if (err) {
		errno = err;
		perror("bench: pthread_create");
		abort();
	}
}

/*
 * Peak resident set of the process in KiB: VmHWM from /proc/self/status.
 * Not getrusage()'s ru_maxrss: Linux carries the RSS of the process that
 * exec()ed us into ru_maxrss (a benchmark started by a 20 MiB Python
 * driver would report at least 20 MiB), while VmHWM belongs to the new
 * address space.  The driver runs every row in a process of its own, so at
 * the end of a row this is that row's peak, plus the program's baseline
 * (loader, libc, libstdc++, the harness, the allocator's own start-up).
 */
static inline long peak_rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
				break;
		fclose(f);
	}
	if (kib < 0) {
		struct rusage ru;

		if (getrusage(RUSAGE_SELF, &ru) == 0)
			kib = ru.ru_maxrss;
	}
	return kib;
}

/*
 * The counters every row reports, set by thread 0 after its loop (counters
 * are summed over threads, so only one thread may set them): items (one
 * item = one "op" of the row, the unit of ns/op) as a rate and as a plain
 * count, and the peak RSS.
 */
static inline void report_row(gb_state *st, int64_t items)
{
	if (gb_state_thread_index(st) != 0)
		return;
	gb_set_items_processed(st, items);
	gb_counter_set(st, "items", (double)items, GB_COUNTER_DEFAULT);
	gb_counter_set(st, "peak_rss_kib", (double)peak_rss_kib(), GB_COUNTER_DEFAULT);
}

/*
 * The clocks rows are measured with.  The development machine is a shared
 * 2-core VM: other processes take CPUs away at random, and then the wall
 * clock of the same run varies by 2x (single thread) to 10x (threads that
 * hand work to each other).  CPU time does not grow when the process is not
 * running, so the rows that do not wait on purpose are timed with it:
 *
 * row(): the CPU time of the thread running the row (Google Benchmark's
 * default, CLOCK_THREAD_CPUTIME_ID: user + system, so page faults and
 * system calls count).  On an idle machine the same as the wall clock.
 *
 * row_proc(): the CPU time of the whole process (MeasureProcessCPUTime),
 * for rows with several threads: the cost of an op over all threads,
 * including the allocator's or liburcu's own background threads.  It does
 * not count time a thread sleeps in a futex wait, so an allocator that
 * serialises threads on a sleeping lock looks better than its wall-clock
 * throughput; the wall-clock figure of every row is reported beside it
 * (counter "items" lets the driver compute it).
 *
 * row_wall(): wall-clock time (UseRealTime), for rows whose cost is
 * waiting (cache_destroy waits for the drain thread and a grace period).
 */
static inline gb_bench *row_clock(const char *name, gb_fn fn, void *arg, int clock)
{
	gb_bench *b = gb_register(name, fn, arg);

	if (!b) {
		fprintf(stderr, "bench: cannot register %s\n", name);
		exit(1);
	}
	if (clock == 1)
		gb_measure_process_cpu_time(b);
	else if (clock == 2)
		gb_use_real_time(b);
	return b;
}

static inline gb_bench *row(const char *name, gb_fn fn, void *arg)
{
	return row_clock(name, fn, arg, 0);
}

static inline gb_bench *row_proc(const char *name, gb_fn fn, void *arg)
{
	return row_clock(name, fn, arg, 1);
}

static inline gb_bench *row_wall(const char *name, gb_fn fn, void *arg)
{
	return row_clock(name, fn, arg, 2);
}

/* CPU time of the calling thread, ns. */
static inline uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif /* BENCH_UTIL_H */
