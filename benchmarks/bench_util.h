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
static inline void spin_wait(unsigned *spins)
{
	if (++*spins < 128)
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
 * Peak resident set of the process in KiB (ru_maxrss).  The driver runs
 * every row in a process of its own, so at the end of a row this is that
 * row's peak, plus the program's baseline (loader, libc, libstdc++, the
 * harness, the allocator's own start-up: 3-8 MiB).
 */
static inline long peak_rss_kib(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ru.ru_maxrss;
}

/*
 * The counters every row reports, set by thread 0 after its loop (counters
 * are summed over threads, so only one thread may set them): items (one
 * item = one "op" of the row, the unit of ns/op) and the peak RSS.
 */
static inline void report_row(gb_state *st, int64_t items)
{
	if (gb_state_thread_index(st) != 0)
		return;
	gb_set_items_processed(st, items);
	gb_counter_set(st, "peak_rss_kib", (double)peak_rss_kib(), GB_COUNTER_DEFAULT);
}

/*
 * The two clocks rows are measured with.
 *
 * row(): the CPU time of the thread running the row (Google Benchmark's
 * default, CLOCK_THREAD_CPUTIME_ID, user + system, so page faults and
 * system calls count).  For single-threaded rows this is the same as the
 * wall-clock time on an idle machine, but it does not grow when other
 * processes take the CPU away: the development machine is a shared 2-core
 * VM, where wall-clock times of the same run differ by 2x under load.
 *
 * row_wall(): wall-clock time (UseRealTime), for rows with several threads
 * or with waiting (grace periods, a background thread): there the time a
 * thread spends blocked is part of the cost, and CPU time would hide an
 * allocator that serialises its threads on a lock.
 */
static inline gb_bench *row_clock(const char *name, gb_fn fn, void *arg, bool wall)
{
	gb_bench *b = gb_register(name, fn, arg);

	if (!b) {
		fprintf(stderr, "bench: cannot register %s\n", name);
		exit(1);
	}
	if (wall)
		gb_use_real_time(b);
	return b;
}

static inline gb_bench *row(const char *name, gb_fn fn, void *arg)
{
	return row_clock(name, fn, arg, false);
}

static inline gb_bench *row_wall(const char *name, gb_fn fn, void *arg)
{
	return row_clock(name, fn, arg, true);
}

/* CPU time of the calling thread, ns. */
static inline uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif /* BENCH_UTIL_H */
