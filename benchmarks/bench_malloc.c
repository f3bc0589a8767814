/*
 * bench_malloc - malloc-family benchmarks on Google Benchmark, in C.
 *
 * This program uses nothing but the standard malloc family and pthreads:
 * it is NOT linked with libsheaf.  The same binary measures glibc's malloc
 * (run it as it is) and any other allocator (LD_PRELOAD=...), which is how
 * benchmarks/bench.py compares them.  benchmarks/README.md describes every
 * row; `bench_malloc --benchmark_list_tests` lists them.
 *
 * Conventions for every row:
 *   - single-threaded rows are timed with the thread's CPU time, larson and
 *     glibc_thread with the process's CPU time, xthread with both threads'
 *     CPU time less long waits (see row() in bench_util.h and bm_xthread;
 *     the driver reports the wall-clock figure too); adaptive iteration
 *     count;
 *   - "items" = the row's op (one malloc+free pair, one realloc call, one
 *     object of a batch, one slot replacement ...), counted over all
 *     threads, so items_per_second is the row's throughput and 1e9 /
 *     items_per_second its ns/op;
 *   - counter peak_rss_kib: the process's peak RSS after the row (the
 *     driver runs one row per process);
 *   - every block the program allocates is written to or escapes through
 *     gb_do_not_optimize(), so no malloc/free pair can be optimised away
 *     (the build also passes -fno-builtin-malloc; the barrier does not rely
 *     on it).
 *
 * The glibc_* rows are our equivalents of glibc's own malloc benchmarks,
 * benchtests/bench-malloc-simple.c and bench-malloc-thread.c, with their
 * parameters (see the comments at those rows).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stdbool.h>

#include "bench_util.h"

#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>   /* glibc >= 2.32 */
#define HAVE_SINGLE_THREADED 1
#endif
#endif

static bool process_single_threaded(void)
{
#ifdef HAVE_SINGLE_THREADED
	return __libc_single_threaded;
#else
	return false;
#endif
}

/* ------------------------------------------------------ malloc/free pairs -- */

/* op = malloc(n), write its first and last byte, free. */
static void bm_malloc_free(gb_state *st, void *arg)
{
	size_t size = (size_t)gb_state_range(st, 0);

	(void)arg;
	GB_FOR(st, i) {
		void *p = malloc(size);

		if (!p)
			die_oom();
		touch(p, size);
		free(p);
	}
	report_row(st, gb_state_iterations(st));
}

/* op = calloc(1, n), write first and last byte, free.  Zeroing is real
 * work here, so bytes_per_second is reported too. */
static void bm_calloc(gb_state *st, void *arg)
{
	size_t size = (size_t)gb_state_range(st, 0);

	unsigned nonzero = 0;

	(void)arg;
	GB_FOR(st, i) {
		unsigned char *p = calloc(1, size);

		if (!p)
			die_oom();
		nonzero |= p[size / 2];   /* read one byte: the zeroing must have happened */
		touch(p, size);
		free(p);
	}
	if (nonzero)
		gb_skip_with_error(st, "calloc returned non-zero memory");
	gb_set_bytes_processed(st, gb_state_iterations(st) * (int64_t)size);
	report_row(st, gb_state_iterations(st));
}

/* op = aligned_alloc(align, n), check the alignment, write, free. */
static void bm_aligned_alloc(gb_state *st, void *arg)
{
	size_t align = (size_t)gb_state_range(st, 0), size = (size_t)gb_state_range(st, 1);
	bool bad = false;

	(void)arg;
	GB_FOR(st, i) {
		void *p = aligned_alloc(align, size);

		if (!p)
			die_oom();
		bad |= ((uintptr_t)p & (align - 1)) != 0;
		touch(p, size);
		free(p);
	}
	if (bad)
		gb_skip_with_error(st, "aligned_alloc returned a misaligned block");
	report_row(st, gb_state_iterations(st));
}

/* ------------------------------------------------------------ realloc -- */

/*
 * One iteration grows one buffer from 16 B to `last` and frees it: a string
 * appended to.  step > 0: +step bytes per call; step == 0: doubling (a
 * vector).  The new last byte is written after every call.  op = one
 * realloc() call.
 */
static int64_t grow_round(size_t step, size_t last)
{
	unsigned char *p = malloc(16);
	int64_t calls = 0;

	if (!p)
		die_oom();
	touch(p, 16);
	for (size_t size = step ? 16 + step : 32; size <= last; size = step ? size + step : size * 2) {
		unsigned char *q = realloc(p, size);

		if (!q)
			die_oom();
		q[size - 1] = (unsigned char)size;
		gb_do_not_optimize(q);
		p = q;
		calls++;
	}
	free(p);
	return calls;
}

static void bm_realloc_grow(gb_state *st, void *arg)
{
	size_t step = (size_t)gb_state_range(st, 0), last = (size_t)gb_state_range(st, 1);
	int64_t calls = 0;

	(void)arg;
	GB_FOR(st, i)
		calls += grow_round(step, last);
	report_row(st, calls);
}

/* ------------------------------------------------------------- batches -- */

#define BATCH_SIZE 64

/*
 * Allocate N blocks of 64 B (writing each), then free all N: newest first
 * (LIFO) or in a random order fixed before the clock starts.  Both orders
 * go through the same index table, so the rows differ only in the order.
 * op = one object (one malloc + one free).
 */
static void bm_batch(gb_state *st, void *arg)
{
	bool random_order = arg != NULL;
	uint32_t n = (uint32_t)gb_state_range(st, 0);
	void **obj = xmalloc(n * sizeof(*obj));
	uint32_t *order = xmalloc(n * sizeof(*order));
	uint64_t seed = 0x9E3779B97F4A7C15ull;

	for (uint32_t i = 0; i < n; i++)
		order[i] = n - 1 - i;
	for (uint32_t i = n - 1; random_order && i > 0; i--) {
		uint32_t j = rnd_below(&seed, i + 1), tmp = order[i];

		order[i] = order[j];
		order[j] = tmp;
	}
	GB_FOR(st, it) {
		for (uint32_t i = 0; i < n; i++) {
			void *p = malloc(BATCH_SIZE);

			if (!p)
				die_oom();
			touch(p, BATCH_SIZE);
			obj[i] = p;
		}
		for (uint32_t i = 0; i < n; i++)
			free(obj[order[i]]);
	}
	report_row(st, gb_state_iterations(st) * n);
	free(order);
	free(obj);
}

/* ------------------------------------------- cross-thread: producer/consumer -- */

#define RING_SIZE 1024 /* power of two */

/*
 * Single-producer single-consumer ring.  head is written only by the
 * producer, tail only by the consumer; each side caches the other's index
 * and reloads it only when the ring looks full (empty).
 */
struct spsc {
	_Alignas(CACHE_LINE) _Atomic uint64_t head;
	_Alignas(CACHE_LINE) _Atomic uint64_t tail;
	_Alignas(CACHE_LINE) void *slot[RING_SIZE];
};

static struct spsc *xthread_ring;   /* set by thread 0 before its loop */

/*
 * Waits until ready() holds.  The first SPIN_LIMIT rounds are a plain spin,
 * part of the cost of a hand-off; a wait that outlasts them means that the
 * other thread is not running (another process has its CPU) or far behind,
 * and its CPU time, yields included, is added to *waited, which the row
 * leaves out (see bm_xthread).
 */
#define WAIT_UNTIL(ready, waited)                                              \
	do {                                                                   \
		unsigned spins_ = 0;                                           \
		uint64_t w0_ = 0;                                              \
		while (!(ready)) {                                             \
			if (spins_ == SPIN_LIMIT - 1)                          \
				w0_ = thread_cpu_ns();                          \
			spin_wait(&spins_);                                    \
		}                                                              \
		if (w0_)                                                       \
			(waited) += thread_cpu_ns() - w0_;                     \
	} while (0)

/* The producer's step: malloc, write, publish (waits while the ring is full). */
static inline void spsc_produce(struct spsc *q, size_t size, uint64_t *head, uint64_t *tail,
				uint64_t *waited)
{
	void *p = malloc(size);

	if (!p)
		die_oom();
	touch(p, size);
	if (*head - *tail == RING_SIZE)
		WAIT_UNTIL(*head - (*tail = atomic_load_explicit(&q->tail, memory_order_acquire)) < RING_SIZE,
			   *waited);
	q->slot[*head & (RING_SIZE - 1)] = p;
	atomic_store_explicit(&q->head, ++*head, memory_order_release);
}

/* The consumer's step: take a block (waits while the ring is empty), read
 * it, as a consumer would, and free it.  Returns the byte read. */
static inline unsigned spsc_consume(struct spsc *q, uint64_t *head, uint64_t *tail, uint64_t *waited)
{
	unsigned char *p;
	unsigned v;

	if (*tail == *head)
		WAIT_UNTIL((*head = atomic_load_explicit(&q->head, memory_order_acquire)) != *tail, *waited);
	p = q->slot[*tail & (RING_SIZE - 1)];
	v = p[0];
	free(p);
	atomic_store_explicit(&q->tail, ++*tail, memory_order_release);
	return v;
}

/*
 * 2 threads: thread 0 mallocs blocks of n bytes (and writes them), thread 1
 * reads and frees them: every free is remote.  op = one block.  Thread 0's
 * set-up happens-before both loops (Google Benchmark starts the clock with a
 * barrier), so thread 1 reads the ring pointer only inside its loop.
 *
 * Clock: the CPU time of both threads (manual time: each thread reports 2x
 * its own and Google Benchmark averages the two), less the long waits of
 * WAIT_UNTIL.  Waiting is not work, and how much CPU a waiter burns depends
 * on how long other processes keep its partner off the CPU, which made this
 * row vary by 10x on the shared 2-core development machine.  The short
 * spins stay in: an allocator that slows one side makes the other spin.
 */
static void bm_xthread(gb_state *st, void *arg)
{
	size_t size = (size_t)gb_state_range(st, 0);
	bool producer = gb_state_thread_index(st) == 0;
	uint64_t head = 0, tail = 0;
	unsigned sum = 0;
	int64_t n = gb_max_iterations(st);

	(void)arg;
	if (producer) {
		xthread_ring = aligned_alloc(CACHE_LINE, sizeof(*xthread_ring));
		if (!xthread_ring)
			die_oom();
		memset(xthread_ring, 0, sizeof(*xthread_ring));
	}
	while (gb_keep_running_batch(st, n)) {
		struct spsc *q = xthread_ring;
		uint64_t waited = 0, c0 = thread_cpu_ns();

		for (int64_t i = 0; i < n; i++) {
			if (producer)
				spsc_produce(q, size, &head, &tail, &waited);
			else
				sum += spsc_consume(q, &head, &tail, &waited);
		}
		gb_set_iteration_time(st, 2e-9 * (double)(thread_cpu_ns() - c0 - waited));
	}
	gb_do_not_optimize(&sum);
	if (producer) {
		/* Both loops are over (the clock stops with a barrier). */
		free(xthread_ring);
		xthread_ring = NULL;
	}
	report_row(st, gb_state_iterations(st));
}

/* ------------------------------------------------------- larson-like -- */

#define LARSON_SLOTS 8192
#define LARSON_MIN 8
#define LARSON_MAX 1000

static _Atomic(void *) *larson_slot;

/*
 * A server-like steady state (after Larson & Krishnan): T threads replace
 * random slots of one shared array of 8192 blocks with new blocks of random
 * size 8..1000 B (the sizes of mimalloc-bench's larson): malloc the new
 * block, write it, swap it into the slot, free the old one.  With T >= 2
 * about (T-1)/T of the frees release a block another thread allocated.
 * The swap is atomic so that every block is freed exactly once; acq_rel
 * orders the allocating thread's writes before the freeing thread's free().
 * op = one replacement (one malloc + one free), counted over all threads.
 */
static void bm_larson(gb_state *st, void *arg)
{
	uint64_t seed = 0x243F6A8885A308D3ull * (uint64_t)(gb_state_thread_index(st) + 1);

	(void)arg;
	if (gb_state_thread_index(st) == 0) {
		larson_slot = xmalloc(LARSON_SLOTS * sizeof(*larson_slot));
		for (uint32_t k = 0; k < LARSON_SLOTS; k++) {
			size_t size = LARSON_MIN + rnd_below(&seed, LARSON_MAX - LARSON_MIN + 1);
			void *p = xmalloc(size);

			touch(p, size);
			atomic_init(&larson_slot[k], p);
		}
	}
	GB_FOR(st, i) {
		_Atomic(void *) *slot = larson_slot;
		size_t size = LARSON_MIN + rnd_below(&seed, LARSON_MAX - LARSON_MIN + 1);
		uint32_t k = rnd_below(&seed, LARSON_SLOTS);
		void *p = malloc(size), *old;

		if (!p)
			die_oom();
		touch(p, size);
		old = atomic_exchange_explicit(&slot[k], p, memory_order_acq_rel);
		free(old);
	}
	if (gb_state_thread_index(st) == 0) {
		for (uint32_t k = 0; k < LARSON_SLOTS; k++)
			free(atomic_load_explicit(&larson_slot[k], memory_order_relaxed));
		free(larson_slot);
		larson_slot = NULL;
	}
	report_row(st, gb_state_iterations(st) * gb_state_threads(st));
}

/* ----------------------------------- glibc benchtests/bench-malloc-simple.c -- */

/*
 * bench-malloc-simple: malloc n blocks of one size, then free them in the
 * same order (FIFO), repeated; no writes to the blocks.  glibc runs it for
 * sizes 8..4096 and n = 25, 100, 400, 1600 in three settings, and reports
 * the time per malloc+free pair:
 *   st      main arena, the process has never created a thread
 *           (SINGLE_THREAD_P: glibc skips atomics and locks);
 *   mt      main arena after a thread was created (SINGLE_THREAD_P false);
 *   thread  in a thread of its own (a thread arena, a fresh tcache).
 * Same here: one iteration is one round of n mallocs and n frees, op = one
 * malloc+free pair.  st rows report counter single_threaded = 1 when the
 * process really was single-threaded (always, unless the allocator under
 * test starts threads of its own); the driver runs one row per process, so
 * st stays st.  The thread setting runs the rounds in a new thread that
 * times itself (manual time, its CPU time like the other single-threaded
 * rows), so thread creation is not counted.
 */
enum simple_mode { SIMPLE_ST, SIMPLE_MT, SIMPLE_THREAD };

struct simple_run {
	size_t size;
	int n;
	int64_t rounds;
	uint64_t ns;
};

static void simple_rounds(struct simple_run *r)
{
	void **arr = xmalloc(1600 * sizeof(*arr));
	uint64_t t0 = thread_cpu_ns();

	for (int64_t j = 0; j < r->rounds; j++) {
		for (int i = 0; i < r->n; i++)
			arr[i] = malloc(r->size);
		gb_do_not_optimize(arr);
		for (int i = 0; i < r->n; i++)
			free(arr[i]);
	}
	r->ns = thread_cpu_ns() - t0;
	free(arr);
}

static void *simple_thread(void *arg)
{
	simple_rounds(arg);
	return NULL;
}

static void *noop_thread(void *arg)
{
	return arg;
}

static void bm_glibc_simple(gb_state *st, void *arg)
{
	enum simple_mode mode = (enum simple_mode)(uintptr_t)arg;
	struct simple_run r = { .size = (size_t)gb_state_range(st, 0),
		                .n = (int)gb_state_range(st, 1) };
	void **arr = xmalloc(1600 * sizeof(*arr));

	if (mode == SIMPLE_MT && process_single_threaded()) {
		pthread_t t;   /* from now on SINGLE_THREAD_P is false for good */

		start_thread(&t, noop_thread, NULL);
		pthread_join(t, NULL);
	}
	if (mode == SIMPLE_THREAD) {
		while (gb_keep_running_batch(st, gb_max_iterations(st))) {
			pthread_t t;

			r.rounds = gb_max_iterations(st);
			start_thread(&t, simple_thread, &r);
			pthread_join(t, NULL);
			gb_set_iteration_time(st, (double)r.ns * 1e-9);
		}
	} else {
		GB_FOR(st, j) {
			for (int i = 0; i < r.n; i++)
				arr[i] = malloc(r.size);
			gb_do_not_optimize(arr);
			for (int i = 0; i < r.n; i++)
				free(arr[i]);
		}
		if (mode == SIMPLE_ST)
			gb_counter_set(st, "single_threaded", process_single_threaded(), 0);
	}
	free(arr);
	report_row(st, gb_state_iterations(st) * r.n);
}

/* ----------------------------------- glibc benchtests/bench-malloc-thread.c -- */

/*
 * bench-malloc-thread: each of T threads keeps a working set of 1024 slots
 * (initially empty) and loops { i = next random offset; free(slot[i]);
 * slot[i] = malloc(next random size) }, sizes 4..32768 B with an inverse
 * square distribution, from two tables (8000 sizes, 4096 offsets) shared by
 * all threads, each thread walking them from the start.  No writes to the
 * blocks.  glibc runs T = 1, 8, 16, 32 for a fixed time and reports
 * time_per_iteration = (sum of the threads' times) / (all iterations);
 * here T = 1, 2, 8 (a 2-core machine), and ns/op = the process's CPU time
 * / all iterations, the same figure when no thread waits (none does here).
 * The tables come from our generator with glibc's RAND_SEED 88, not from
 * rand().
 */
#define GT_WORKING_SET 1024
#define GT_NUM_SIZES 8000
#define GT_NUM_OFFSETS (GT_WORKING_SET * 4)
#define GT_MIN_SIZE 4
#define GT_MAX_SIZE 32768

static unsigned gt_sizes[GT_NUM_SIZES];
static unsigned gt_offsets[GT_NUM_OFFSETS];

static void glibc_thread_tables(void)
{
	uint64_t seed = 88;
	/* Inverse square: density ~ x^-2 on [min, max]; with u uniform in
	 * [0, 1), x = 1 / (u (1/max - 1/min) + 1/min). */
	const double a = 1.0 / GT_MIN_SIZE, b = 1.0 / GT_MAX_SIZE;

	for (size_t i = 0; i < GT_NUM_SIZES; i++) {
		double u = (double)(rnd_next(&seed) >> 11) * 0x1.0p-53;

		gt_sizes[i] = (unsigned)(1.0 / (u * (b - a) + a));
	}
	for (size_t i = 0; i < GT_NUM_OFFSETS; i++)
		gt_offsets[i] = rnd_below(&seed, GT_WORKING_SET);
}

static void bm_glibc_thread(gb_state *st, void *arg)
{
	void **ws = calloc(GT_WORKING_SET, sizeof(*ws));
	unsigned os = 0, bs = 0;

	(void)arg;
	if (!ws)
		die_oom();
	GB_FOR(st, i) {
		unsigned idx, size;

		os = os >= GT_NUM_OFFSETS - 1 ? 0 : os + 1;
		bs = bs >= GT_NUM_SIZES - 1 ? 0 : bs + 1;
		idx = gt_offsets[os];
		size = gt_sizes[bs];
		free(ws[idx]);
		ws[idx] = malloc(size);
		gb_do_not_optimize(ws[idx]);
	}
	for (size_t k = 0; k < GT_WORKING_SET; k++)
		free(ws[k]);
	free(ws);
	report_row(st, gb_state_iterations(st) * gb_state_threads(st));
}

/* ------------------------------------------------- scaling (BENCH_SCALE) -- */

/*
 * Thread-scaling rows, registered only when BENCH_SCALE lists thread counts
 * (e.g. BENCH_SCALE=1,2,4,8,16; benchmarks/scaling.py sets it).  All run on
 * the wall clock: op = one malloc+free pair (one block for scale_xthread),
 * counted over all threads, so items_per_second is the throughput of the
 * whole process and a perfectly scaling allocator doubles it with the
 * threads (given the cores).  On the 2-core development machine these rows
 * measure little; they are meant for machines with many cores.
 *
 *   scale_local        each thread allocates 64 blocks of 16..1024 B
 *                      (written) and frees them in a shuffled order: no
 *                      sharing at all, the per-thread caches alone;
 *   scale_larson       larson above: 8192 shared slots, (T-1)/T remote frees;
 *   scale_glibc_thread glibc's bench-malloc-thread above;
 *   scale_xthread      T/2 producer/consumer pairs, 64 B blocks: every free
 *                      is remote, and T/2 threads free at once.
 */
#define SCALE_BATCH 64

static void bm_scale_local(gb_state *st, void *arg)
{
	uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(gb_state_thread_index(st) + 1);
	void *obj[SCALE_BATCH];
	uint8_t order[SCALE_BATCH];
	size_t size[SCALE_BATCH];

	(void)arg;
	for (unsigned i = 0; i < SCALE_BATCH; i++) {
		order[i] = (uint8_t)i;
		size[i] = 16 + rnd_below(&seed, 1024 - 16 + 1);
	}
	for (unsigned i = SCALE_BATCH - 1; i > 0; i--) {
		unsigned j = rnd_below(&seed, i + 1);
		uint8_t t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	GB_FOR(st, it) {
		for (unsigned i = 0; i < SCALE_BATCH; i++) {
			obj[i] = malloc(size[i]);
			if (!obj[i])
				die_oom();
			touch(obj[i], size[i]);
		}
		for (unsigned i = 0; i < SCALE_BATCH; i++)
			free(obj[order[i]]);
	}
	report_row(st, gb_state_iterations(st) * gb_state_threads(st) * SCALE_BATCH);
}

#define SCALE_MAX_PAIRS 64
static struct spsc scale_ring[SCALE_MAX_PAIRS];

/*
 * Thread 2k produces for thread 2k+1.  Both run the same number of
 * iterations (Google Benchmark gives every thread the same count), so each
 * ring ends empty; the producer waits for that and resets the indices for
 * the next run.  Waiting is part of the cost here (wall clock).
 */
static void bm_scale_xthread(gb_state *st, void *arg)
{
	int idx = gb_state_thread_index(st);
	struct spsc *q = &scale_ring[(idx / 2) % SCALE_MAX_PAIRS];
	bool producer = idx % 2 == 0, alone = idx + 1 == gb_state_threads(st) && producer;
	uint64_t head = 0, tail = 0, waited = 0;
	unsigned sum = 0;

	(void)arg;
	GB_FOR(st, i) {
		if (alone) {        /* odd thread count: the last thread frees its own */
			void *p = malloc(64);

			if (!p)
				die_oom();
			touch(p, 64);
			free(p);
		} else if (producer) {
			spsc_produce(q, 64, &head, &tail, &waited);
		} else {
			sum += spsc_consume(q, &head, &tail, &waited);
		}
	}
	if (producer && !alone) {
		unsigned spins = 0;

		while (atomic_load_explicit(&q->tail, memory_order_acquire) != head)
			spin_wait(&spins);
		atomic_store_explicit(&q->head, 0, memory_order_relaxed);
		atomic_store_explicit(&q->tail, 0, memory_order_relaxed);
	}
	gb_do_not_optimize(&sum);
	gb_do_not_optimize(&waited);
	report_row(st, gb_state_iterations(st) * gb_state_threads(st));
}

/* Registers the scale_* rows for every thread count in BENCH_SCALE. */
static void register_scaling(const char *list)
{
	gb_bench *b[4] = {
		row_wall("scale_local", bm_scale_local, NULL),
		row_wall("scale_larson", bm_larson, NULL),
		row_wall("scale_glibc_thread", bm_glibc_thread, NULL),
		row_wall("scale_xthread", bm_scale_xthread, NULL),
	};

	for (const char *s = list; *s;) {
		char *end;
		long t = strtol(s, &end, 10);

		if (end == s || t < 1 || t > 2 * SCALE_MAX_PAIRS) {
			fprintf(stderr, "bench_malloc: BENCH_SCALE=%s: want thread counts 1..%d, comma-separated\n",
				list, 2 * SCALE_MAX_PAIRS);
			exit(2);
		}
		for (int k = 0; k < 4; k++)
			if (k != 3 || t >= 2)
				gb_threads(b[k], (int)t);
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',') {
			fprintf(stderr, "bench_malloc: BENCH_SCALE=%s: unexpected '%c'\n", list, *end);
			exit(2);
		}
	}
}

/* ---------------------------------------------------------------- main -- */

int main(int argc, char **argv)
{
	static const char *const simple_names[] = { "size", "blocks" };
	static const int64_t simple_sizes[] = { 16, 256, 4096 };
	static const int64_t simple_blocks[] = { 25, 100, 400, 1600 };
	static const int64_t *const simple_lists[] = { simple_sizes, simple_blocks };
	static const size_t simple_lens[] = { 3, 4 };
	static const int64_t pair_sizes[] = { 8, 16, 32, 64, 128, 256, 512, 1024, 4096,
		                              16384, 32768, 65536, 262144, 1048576 };
	static const int64_t calloc_sizes[] = { 64, 4096, 65536, 1048576 };
	static const int64_t aligned[][2] = { { 64, 256 }, { 4096, 128 }, { 4096, 4096 } };
	static const int64_t grow[][2] = { { 16, 65536 }, { 0, 1048576 } };
	gb_bench *b;

	glibc_thread_tables();
	gb_add_custom_context("program", "bench_malloc (not linked with libsheaf)");
	gb_add_custom_context("ld_preload", getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "");

	b = row("malloc_free", bm_malloc_free, NULL);
	for (size_t i = 0; i < sizeof(pair_sizes) / sizeof(pair_sizes[0]); i++)
		gb_arg(b, pair_sizes[i]);
	b = row("calloc", bm_calloc, NULL);
	for (size_t i = 0; i < sizeof(calloc_sizes) / sizeof(calloc_sizes[0]); i++)
		gb_arg(b, calloc_sizes[i]);
	b = row("realloc_grow", bm_realloc_grow, NULL);
	gb_arg_names(b, (const char *const[]){ "step", "to" }, 2);
	for (size_t i = 0; i < 2; i++)
		gb_args(b, grow[i], 2);
	b = row("aligned_alloc", bm_aligned_alloc, NULL);
	gb_arg_names(b, (const char *const[]){ "align", "size" }, 2);
	for (size_t i = 0; i < 3; i++)
		gb_args(b, aligned[i], 2);

	gb_arg(gb_arg(row("batch_lifo", bm_batch, NULL), 1000), 100000);
	gb_arg(gb_arg(row("batch_random", bm_batch, (void *)1), 1000), 100000);

	gb_use_manual_time(gb_threads(gb_arg(gb_arg(row("xthread", bm_xthread, NULL), 64), 4096), 2));
	gb_threads(gb_threads(gb_threads(row_proc("larson", bm_larson, NULL), 1), 2), 4);

	b = row("glibc_simple_st", bm_glibc_simple, (void *)(uintptr_t)SIMPLE_ST);
	gb_args_product(gb_arg_names(b, simple_names, 2), simple_lists, simple_lens, 2);
	b = row("glibc_simple_mt", bm_glibc_simple, (void *)(uintptr_t)SIMPLE_MT);
	gb_args_product(gb_arg_names(b, simple_names, 2), simple_lists, simple_lens, 2);
	b = row("glibc_simple_thread", bm_glibc_simple, (void *)(uintptr_t)SIMPLE_THREAD);
	gb_use_manual_time(gb_args_product(gb_arg_names(b, simple_names, 2), simple_lists,
		                           simple_lens, 2));
	gb_threads(gb_threads(gb_threads(row_proc("glibc_thread", bm_glibc_thread, NULL), 1), 2), 8);
	if (getenv("BENCH_SCALE"))
		register_scaling(getenv("BENCH_SCALE"));

	return gb_main(argc, argv);
}
