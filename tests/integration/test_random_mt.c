/*
 * test_random_mt.c - randomized multi-threaded use of the malloc family.
 *
 * What it proves: under concurrent, mixed use by several threads -
 * malloc / calloc / realloc (grow and shrink) / posix_memalign /
 * aligned_alloc / free, sizes mostly small with some up to 256 KiB, blocks
 * freed by the thread that allocated them and, through a shared exchange,
 * by other threads (cross-thread frees and reallocs) - sheaf never hands out
 * memory that is still in use (every block carries a pattern derived from
 * its size and a per-allocation tag, checked before every free and realloc
 * and on receipt from another thread), returns correctly aligned and zeroed
 * (calloc) blocks, keeps contents across realloc, and its statistics stay
 * exact: once everything is freed, allocs - frees is back where it was, with
 * the threads alive and quiescent and again after they exited (a thread's
 * counters must survive its exit).
 *
 * 2 million operations in all (50,000 when SHEAF_VALGRIND_QUICK is set: then
 * it runs under memcheck).  SHEAF_TEST_SEED=n repeats a run's random choices
 * (thread interleaving is not repeatable); SHEAF_TEST_OPS=n sets the total.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sheaf.h"
#include "check.h"
#include "pattern.h"

#define NTHREADS 4
#define SLOTS 1000
#define XCHG_CAP 256

struct block {
	uint8_t *p;     /* NULL: empty slot */
	size_t size;    /* bytes asked for (and written) */
	uint64_t tag;   /* seed of the pattern */
};

struct worker {
	pthread_t tid;
	int id;
	uint64_t rng;
	long ops;
	struct block *slots;
	uint64_t tags;          /* allocations and reallocs so far: makes tags unique */
	/* results, read by main after join */
	uint64_t allocations;   /* successful malloc/calloc/memalign/realloc(NULL) */
	uint64_t cross_frees;   /* blocks received from another thread */
	long errors;
};

/* The exchange: blocks on their way to another thread. */
static struct {
	pthread_mutex_t lock;
	struct {
		struct block b;
		int from;
	} e[XCHG_CAP];
	int n;
} xchg = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_barrier_t barrier;
static atomic_long reported;       /* error lines printed so far (capped) */

static uint64_t mix(uint64_t x)    /* splitmix64 finaliser */
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* ------------------------------------------------------------ pattern -- */
/*
 * tests/pattern.h; the seed depends on the tag (unique per allocation) and
 * the size.
 */
static inline uint64_t seed_of(const struct block *b)
{
	return mix(b->tag ^ (b->size << 40));
}

static void report(struct worker *w, const char *what, const struct block *b, size_t at)
{
	w->errors++;
	if (atomic_fetch_add(&reported, 1) < 20)
		fprintf(stderr, "thread %d: %s: block %p size %zu tag %" PRIx64 " byte %zu\n", w->id,
			what, (void *)b->p, b->size, b->tag, at);
}

static void verify_block(struct worker *w, const struct block *b, const char *when)
{
	size_t bad = check_range(b->p, seed_of(b), 0, b->size);
	if (bad != SIZE_MAX)
		report(w, when, b, bad);
}

static bool is_zero(const uint8_t *p, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		if (v)
			return false;
	}
	for (; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* -------------------------------------------------------------- sizes -- */

static size_t random_size(uint64_t *s)
{
	uint64_t r = rnd(s);
	unsigned int pick = (unsigned int)(r % 1000);
	r >>= 10;
	if (pick < 500)
		return 1 + r % 64;               /* 50%: tiny */
	if (pick < 900)
		return 65 + r % 960;             /* 40%: small */
	if (pick < 994)
		return 1025 + r % (32768 - 1024); /* 9.4%: up to the largest class */
	return 32769 + r % (256 * 1024 - 32768); /* 0.6%: large, up to 256 KiB */
}

static size_t random_align(uint64_t *s, size_t min)
{
	size_t a = (size_t)1 << (rnd(s) % 13);   /* 1 .. 4096 */
	if (rnd(s) % 64 == 0)
		a = (size_t)1 << (13 + rnd(s) % 4); /* rarely 8 KiB .. 64 KiB */
	return a < min ? min : a;
}

/* ---------------------------------------------------------- operations -- */

static uint64_t new_tag(struct worker *w)
{
	return ((uint64_t)w->id << 56) | ++w->tags;
}

static void do_alloc(struct worker *w, struct block *b)
{
	size_t size = random_size(&w->rng);
	size_t align = 0;
	unsigned int kind = (unsigned int)(rnd(&w->rng) % 100);
	void *p = NULL;

	if (kind < 55) {
		p = malloc(size);
	} else if (kind < 65) {
		p = calloc(1, size);
		if (p && !is_zero(p, size)) {
			struct block z = { p, size, 0 };
			report(w, "calloc memory not zero", &z, 0);
		}
	} else if (kind < 75) {
		align = random_align(&w->rng, sizeof(void *));
		int rc = posix_memalign(&p, align, size);
		if (rc != 0)
			p = NULL;
	} else if (kind < 85) {
		align = random_align(&w->rng, 1);
		p = aligned_alloc(align, size);
	} else if (kind < 92) {
		p = realloc(NULL, size);
	} else {
		p = sheaf_malloc(size);
	}
	if (!p) {
		struct block z = { NULL, size, 0 };
		report(w, "allocation failed", &z, 0);
		return;
	}
	size_t want = align ? align : size >= 16 ? 16 : 8;
	if ((uintptr_t)p & (want - 1)) {
		struct block z = { p, size, 0 };
		report(w, "misaligned block", &z, want);
	}
	if ((w->allocations & 63) == 0 && sheaf_malloc_usable_size(p) < size) {
		struct block z = { p, size, 0 };
		report(w, "usable size below the request", &z, sheaf_malloc_usable_size(p));
	}
	b->p = p;
	b->size = size;
	b->tag = new_tag(w);
	w->allocations++;
	fill_range(b->p, seed_of(b), 0, size);
}

static void do_free(struct worker *w, struct block *b, const char *when)
{
	verify_block(w, b, when);
	if (rnd(&w->rng) % 8 == 0)
		sheaf_free(b->p);
	else
		free(b->p);
	b->p = NULL;
}

static void do_realloc(struct worker *w, struct block *b)
{
	size_t old = b->size;
	size_t size;
	uint64_t r = rnd(&w->rng);

	if (r % 3 == 0)
		size = random_size(&w->rng);             /* anywhere */
	else if (r % 3 == 1)
		size = old + 1 + (r >> 8) % (old + 64);  /* grow */
	else
		size = 1 + (r >> 8) % old;               /* shrink */
	if (size > 512 * 1024)
		size = 512 * 1024;
	verify_block(w, b, "before realloc");

	uint8_t *q = realloc(b->p, size);
	if (!q) {
		struct block z = { b->p, size, b->tag };
		report(w, "realloc failed", &z, old);
		return;
	}
	b->p = q;
	if ((uintptr_t)q & (size >= 16 ? 15 : 7)) {
		struct block z = { q, size, 0 };
		report(w, "misaligned realloc", &z, 0);
	}
	/* The kept prefix still carries the old pattern: check it, then give
	 * the block its new identity. */
	size_t keep = old < size ? old : size;
	size_t bad = check_range(q, seed_of(b), 0, keep);
	if (bad != SIZE_MAX)
		report(w, "realloc lost contents", b, bad);
	b->size = size;
	b->tag = new_tag(w);
	fill_range(q, seed_of(b), 0, size);
}

/* Gives the block in `b` to the exchange; false if the exchange is full. */
static bool give_away(struct worker *w, struct block *b)
{
	bool done = false;
	pthread_mutex_lock(&xchg.lock);
	if (xchg.n < XCHG_CAP) {
		xchg.e[xchg.n].b = *b;
		xchg.e[xchg.n].from = w->id;
		xchg.n++;
		done = true;
	}
	pthread_mutex_unlock(&xchg.lock);
	if (done)
		b->p = NULL;
	return done;
}

/* Takes a block that another thread gave away; false if there is none. */
static bool take(struct worker *w, struct block *out)
{
	bool got = false;
	pthread_mutex_lock(&xchg.lock);
	if (xchg.n > 0) {
		int start = (int)(rnd(&w->rng) % (uint64_t)xchg.n);
		for (int k = 0; k < xchg.n; k++) {
			int i = (start + k) % xchg.n;
			if (xchg.e[i].from != w->id) {
				*out = xchg.e[i].b;
				xchg.e[i] = xchg.e[--xchg.n];
				got = true;
				break;
			}
		}
	}
	pthread_mutex_unlock(&xchg.lock);
	return got;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	/* Per-thread allocator state comes to life outside the measured window. */
	void *warm = malloc(64);
	__asm__ volatile("" : "+r"(warm) : : "memory"); /* not optimised away */
	free(warm);
	pthread_barrier_wait(&barrier); /* A: main takes the baseline */
	pthread_barrier_wait(&barrier); /* B: go */

	for (long op = 0; op < w->ops; op++) {
		struct block *b = &w->slots[rnd(&w->rng) % SLOTS];
		unsigned int what = (unsigned int)(rnd(&w->rng) % 100);

		if (!b->p) {
			do_alloc(w, b);
		} else if (what < 50) {
			do_free(w, b, "before free");
		} else if (what < 75) {
			do_realloc(w, b);
		} else if (what < 87) {
			verify_block(w, b, "at rest");
			if (!give_away(w, b))
				do_free(w, b, "before free");
		} else {
			verify_block(w, b, "at rest");
		}

		/* Now and then, a block from another thread: free it or adopt it. */
		if (what % 8 == 0) {
			struct block got;
			if (take(w, &got)) {
				w->cross_frees++;
				verify_block(w, &got, "on receipt from another thread");
				struct block *dst = &w->slots[rnd(&w->rng) % SLOTS];
				if (!dst->p && rnd(&w->rng) % 2) {
					*dst = got;      /* adopted: later realloc'd or freed here */
				} else if (rnd(&w->rng) % 4 == 0) {
					do_realloc(w, &got);
					do_free(w, &got, "before free");
				} else {
					do_free(w, &got, "before free");
				}
			}
		}
	}
	for (int i = 0; i < SLOTS; i++)
		if (w->slots[i].p)
			do_free(w, &w->slots[i], "before final free");

	pthread_barrier_wait(&barrier); /* C: all done; main drains the exchange */
	pthread_barrier_wait(&barrier); /* D: main has measured; exit */
	return NULL;
}

static struct sheaf_stats stats(void)
{
	struct sheaf_stats s;
	memset(&s, 0, sizeof(s));
	sheaf_stats_get(&s);
	return s;
}

static int64_t live(const struct sheaf_stats *s)
{
	return (int64_t)(s->allocs - s->frees);
}

int main(void)
{
	bool quick = getenv("SHEAF_VALGRIND_QUICK") != NULL;
	long total = quick ? 50000 : 2000000;
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
	static struct worker workers[NTHREADS];

	if (getenv("SHEAF_TEST_SEED"))
		seed = strtoull(getenv("SHEAF_TEST_SEED"), NULL, 0);
	if (getenv("SHEAF_TEST_OPS"))
		total = strtol(getenv("SHEAF_TEST_OPS"), NULL, 0);
	printf("test_random_mt: seed %" PRIu64 " (SHEAF_TEST_SEED=%" PRIu64 " repeats it), "
	       "%ld ops, %d threads\n", seed, seed, total, NTHREADS);
	fflush(stdout);

	REQUIRE(pthread_barrier_init(&barrier, NULL, NTHREADS + 1) == 0);
	for (int i = 0; i < NTHREADS; i++) {
		struct worker *w = &workers[i];
		w->id = i;
		w->rng = mix(seed + (uint64_t)i * 0x1234567ull) | 1;
		w->ops = total / NTHREADS;
		w->slots = calloc(SLOTS, sizeof(struct block));
		REQUIRE(w->slots != NULL);
		REQUIRE(pthread_create(&w->tid, NULL, worker_main, w) == 0);
	}

	pthread_barrier_wait(&barrier); /* A */
	struct sheaf_stats s0 = stats();
	pthread_barrier_wait(&barrier); /* B */

	pthread_barrier_wait(&barrier); /* C: workers have freed their slots */
	/* What is still on its way between threads is freed here (one more
	 * cross-thread free each). */
	struct worker drain = { .id = NTHREADS, .rng = seed | 1 };
	for (int i = 0; i < xchg.n; i++) {
		verify_block(&drain, &xchg.e[i].b, "left in the exchange");
		free(xchg.e[i].b.p);
	}
	xchg.n = 0;
	struct sheaf_stats s1 = stats();
	pthread_barrier_wait(&barrier); /* D */

	uint64_t allocations = 0, cross = 0;
	long errors = drain.errors;
	for (int i = 0; i < NTHREADS; i++) {
		REQUIRE(pthread_join(workers[i].tid, NULL) == 0);
		allocations += workers[i].allocations;
		cross += workers[i].cross_frees;
		errors += workers[i].errors;
	}
	struct sheaf_stats s2 = stats();
	for (int i = 0; i < NTHREADS; i++)
		free(workers[i].slots);

	printf("test_random_mt: %" PRIu64 " allocations, %" PRIu64 " blocks crossed threads, "
	       "sheaf counted %" PRIu64 " allocs / %" PRIu64 " frees\n",
	       allocations, cross, s1.allocs - s0.allocs, s1.frees - s0.frees);
	CHECKF(errors == 0, "%ld errors in the workers (first ones above)", errors);
	CHECKF(cross > 0, "no block crossed threads");

	/*
	 * Everything allocated between the snapshots was freed before s1: the
	 * difference must be exact, no slack.  The workers are parked at a
	 * barrier, so their thread-local counters are quiescent.
	 */
	CHECKF(live(&s1) == live(&s0), "allocs - frees moved from %" PRId64 " to %" PRId64
	       " (with the workers alive)", live(&s0), live(&s1));
	CHECKF(s1.allocs - s0.allocs >= allocations,
	       "sheaf counted %" PRIu64 " allocations, the test made at least %" PRIu64,
	       s1.allocs - s0.allocs, allocations);
	CHECKF(s1.large_allocs == s0.large_allocs, "large_allocs %zu -> %zu", s0.large_allocs,
	       s1.large_allocs);
	CHECKF(s1.active_bytes == s0.active_bytes, "active_bytes %zu -> %zu", s0.active_bytes,
	       s1.active_bytes);
	/* Tiny builds keep no per-thread state: nothing to count there. */
	/* Tiny builds, and any build under valgrind, keep no per-thread state. */
	bool tiny = (sheaf_build_flags() & SHEAF_BUILD_TINY) || getenv("SHEAF_VALGRIND_QUICK");
	CHECKF(tiny || s1.threads >= NTHREADS, "stats report %zu threads with %d workers alive",
	       s1.threads, NTHREADS);
	/*
	 * After the workers exited: their counters must have been folded into
	 * the totals, and their per-thread state released.  glibc itself frees
	 * nothing the workers allocated through malloc (thread stacks and DTVs
	 * stay cached), so this is exact too.
	 */
	CHECKF(live(&s2) == live(&s0), "allocs - frees moved from %" PRId64 " to %" PRId64
	       " (after the workers exited)", live(&s0), live(&s2));
	CHECKF(s2.allocs >= s1.allocs && s2.frees >= s1.frees,
	       "totals went down when threads exited: allocs %" PRIu64 " -> %" PRIu64
	       ", frees %" PRIu64 " -> %" PRIu64, s1.allocs, s2.allocs, s1.frees, s2.frees);
	CHECKF(tiny || s2.threads + NTHREADS <= s1.threads, "threads %zu -> %zu after %d workers exited",
	       s1.threads, s2.threads, NTHREADS);
	CHECKF(s2.active_bytes == s0.active_bytes, "active_bytes %zu -> %zu after exit",
	       s0.active_bytes, s2.active_bytes);

	pthread_barrier_destroy(&barrier);
	return check_done("test_random_mt");
}
