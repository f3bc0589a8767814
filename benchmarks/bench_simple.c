/*
 * bench_simple - allocator micro-benchmarks in plain C.
 *
 * The program uses nothing but the standard malloc family and pthreads, so
 * the *same* binary measures glibc's malloc (run it as is) and any other
 * allocator (run it under LD_PRELOAD=...).  benchmarks/compare.sh drives it
 * over glibc, sheaf and the installed peers; benchmarks/README.md says what
 * every row measures and why.
 *
 * Output, one line per row:
 *
 *	name ops seconds ns_per_op peak_rss_kib
 *
 * or, with --json, one JSON object holding the same fields.
 *
 * Each row does a fixed amount of work (--quick: a tenth of it), so the
 * same row does the same operations under every allocator; only the time
 * and the memory differ.  "ops" is the unit given in the row's description
 * (--list), usually one malloc+free pair.
 *
 * Peak RSS is per row.  ru_maxrss belongs to the whole process, so when more
 * than one row runs, each row runs in a forked child and its peak is the
 * child's ru_maxrss as wait4() reports it (Linux starts a child's high-water
 * mark at its RSS at fork time, not at the parent's peak).  With a single
 * row (--only NAME, which is how compare.sh calls it) the row runs in the
 * process itself and the peak is the process's own.  Either way the figure
 * includes the program's baseline (libc, the loader, the allocator's own
 * start-up), about 1-3 MiB.
 *
 * The compiler must not remove the work: GCC and clang both delete a
 * malloc/free pair whose block is never used.  Every block is written to and
 * its address escapes through an empty asm statement with a "memory"
 * clobber (escape()), which the optimiser has to treat as a read of the
 * block.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers -- */

#define CACHE_LINE 64

static void die(const char *what)
{
	fprintf(stderr, "bench_simple: %s\n", what);
	exit(1);
}

static void oom(void)
{
	die("out of memory");
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Make the optimiser believe that @p, and the memory behind it, is used. */
static inline void escape(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

/*
 * Use a fresh block the way a program would: write its first and last byte.
 * The last byte matters for the large rows: an allocator that hands pages
 * back to the kernel on free() pays for the page fault here, as a real
 * program would.
 */
static inline void touch(void *p, size_t size)
{
	unsigned char *b = p;

	b[0] = (unsigned char)size;
	b[size - 1] = 1;
	escape(p);
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
 * Waiting on the other thread: spin briefly, then yield.  The machine this
 * runs on may have only two cores and other load, so a waiter that never
 * yields can keep the thread it waits for off the CPU for a whole slice.
 */
static inline void spin_wait(unsigned *spins)
{
	if (++*spins < 128)
		cpu_relax();
	else
		sched_yield();
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

static void *xmalloc(size_t size)
{
	void *p = malloc(size);

	if (!p)
		oom();
	return p;
}

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int err = pthread_create(t, NULL, fn, arg);

	if (err) {
		errno = err;
		perror("bench_simple: pthread_create");
		exit(1);
	}
}

/* ------------------------------------------------------ malloc/free pairs -- */

static void pair_loop(size_t size, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		void *p = malloc(size);

		if (!p)
			oom();
		touch(p, size);
		free(p);
	}
}

/* One op: malloc(size), write it, free it. */
static uint64_t run_pair(size_t size, uint64_t ops)
{
	uint64_t t0;

	pair_loop(size, ops / 16 + 1); /* warm-up: first pages, thread cache */
	t0 = now_ns();
	pair_loop(size, ops);
	return now_ns() - t0;
}

/* ------------------------------------------------------------- batches -- */

#define BATCH_N 10000
#define BATCH_SIZE 64

static void batch_round(void **obj, const uint32_t *order)
{
	for (uint32_t i = 0; i < BATCH_N; i++) {
		void *p = malloc(BATCH_SIZE);

		if (!p)
			oom();
		touch(p, BATCH_SIZE);
		obj[i] = p;
	}
	for (uint32_t i = 0; i < BATCH_N; i++)
		free(obj[order[i]]);
}

/*
 * One op: one 64 B object allocated in a batch of 10 000 and later freed.
 * The free order comes from a table built before the clock starts; the LIFO
 * row walks the same table (reversed indices), so both rows pay the same
 * load per free and differ only in the order.
 */
static uint64_t run_batch(size_t random_order, uint64_t ops)
{
	void **obj = xmalloc(BATCH_N * sizeof(*obj));
	uint32_t *order = xmalloc(BATCH_N * sizeof(*order));
	uint64_t rounds = ops / BATCH_N, t0, t;
	uint64_t seed = 0x9E3779B97F4A7C15ull;

	for (uint32_t i = 0; i < BATCH_N; i++)
		order[i] = BATCH_N - 1 - i;
	if (random_order) {
		for (uint32_t i = BATCH_N - 1; i > 0; i--) {
			uint32_t j = rnd_below(&seed, i + 1);
			uint32_t tmp = order[i];

			order[i] = order[j];
			order[j] = tmp;
		}
	}

	batch_round(obj, order); /* warm-up */
	t0 = now_ns();
	for (uint64_t r = 0; r < rounds; r++)
		batch_round(obj, order);
	t = now_ns() - t0;

	free(order);
	free(obj);
	return t;
}

/* ------------------------------------------------------ realloc growth -- */

#define GROW_FIRST 16
#define GROW_LAST 65536
#define GROW_STEP 16
#define GROW_STEPS ((GROW_LAST - GROW_FIRST) / GROW_STEP)

static void grow_round(void)
{
	unsigned char *p = malloc(GROW_FIRST);

	if (!p)
		oom();
	touch(p, GROW_FIRST);
	for (size_t size = GROW_FIRST + GROW_STEP; size <= GROW_LAST; size += GROW_STEP) {
		unsigned char *q = realloc(p, size);

		if (!q)
			oom();
		q[size - 1] = (unsigned char)size;
		escape(q);
		p = q;
	}
	free(p);
}

/*
 * One op: one realloc() call growing a buffer by 16 B; a round grows one
 * buffer from 16 B to 64 KiB (4095 calls) and frees it.
 */
static uint64_t run_realloc(size_t unused, uint64_t ops)
{
	uint64_t rounds = ops / GROW_STEPS, t0;

	(void)unused;

	grow_round();
	t0 = now_ns();
	for (uint64_t r = 0; r < rounds; r++)
		grow_round();
	return now_ns() - t0;
}

/* --------------------------------------------- producer / consumer (SPSC) -- */

#define RING_SIZE 1024 /* power of two */
#define XFER_SIZE 64

/*
 * Single-producer single-consumer ring of pointers.  head is written only by
 * the producer, tail only by the consumer; each side keeps a private copy of
 * the other's index and reloads it only when the ring looks full (empty), so
 * the two cache lines move only when they must.
 */
struct spsc {
	_Alignas(CACHE_LINE) _Atomic uint64_t head;
	_Alignas(CACHE_LINE) _Atomic uint64_t tail;
	_Alignas(CACHE_LINE) void *slot[RING_SIZE];
	uint64_t n;
	pthread_barrier_t *start;
};

static void *spsc_producer(void *arg)
{
	struct spsc *q = arg;
	uint64_t head = 0, tail = 0;

	pthread_barrier_wait(q->start);
	for (uint64_t i = 0; i < q->n; i++) {
		void *p = malloc(XFER_SIZE);
		unsigned spins = 0;

		if (!p)
			oom();
		touch(p, XFER_SIZE);
		while (head - tail == RING_SIZE) {
			tail = atomic_load_explicit(&q->tail, memory_order_acquire);
			if (head - tail == RING_SIZE)
				spin_wait(&spins);
		}
		q->slot[head & (RING_SIZE - 1)] = p;
		atomic_store_explicit(&q->head, ++head, memory_order_release);
	}
	return NULL;
}

static void *spsc_consumer(void *arg)
{
	struct spsc *q = arg;
	uint64_t head = 0, tail = 0;
	unsigned sum = 0;

	pthread_barrier_wait(q->start);
	for (uint64_t i = 0; i < q->n; i++) {
		unsigned spins = 0;
		unsigned char *p;

		while (tail == head) {
			head = atomic_load_explicit(&q->head, memory_order_acquire);
			if (tail == head)
				spin_wait(&spins);
		}
		p = q->slot[tail & (RING_SIZE - 1)];
		sum += p[0]; /* read the block, as a consumer would */
		free(p);
		atomic_store_explicit(&q->tail, ++tail, memory_order_release);
	}
	return (void *)(uintptr_t)sum;
}

/* One op: one 64 B block malloc'd by the producer and freed by the consumer. */
static uint64_t run_xthread(size_t unused, uint64_t ops)
{
	struct spsc *q;
	pthread_barrier_t start;
	pthread_t prod, cons;
	uint64_t t0;

	(void)unused;
	/* 64-byte alignment for the struct; C11 aligned_alloc is plain libc API. */
	q = aligned_alloc(CACHE_LINE, sizeof(*q));
	if (!q)
		oom();
	memset(q, 0, sizeof(*q));
	q->n = ops;
	q->start = &start;
	pthread_barrier_init(&start, NULL, 3);
	start_thread(&prod, spsc_producer, q);
	start_thread(&cons, spsc_consumer, q);
	pthread_barrier_wait(&start);
	t0 = now_ns();
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);
	t0 = now_ns() - t0;
	pthread_barrier_destroy(&start);
	free(q);
	return t0;
}

/* ----------------------------------------------------------- larson-like -- */

#define LARSON_THREADS 2
#define LARSON_SLOTS 4096 /* live blocks per thread */
#define LARSON_MIN 16
#define LARSON_MAX 512

struct larson_arg {
	_Atomic(void *) *slot;  /* the array this thread replaces blocks in */
	uint32_t nslots;
	_Atomic(void *) *fill;  /* the part of it this thread fills first */
	uint64_t n;
	uint64_t seed;
	pthread_barrier_t *start;
};

static void *larson_worker(void *arg)
{
	struct larson_arg *a = arg;
	uint64_t seed = a->seed;

	/* Untimed: this thread allocates its share of the live blocks. */
	for (uint32_t i = 0; i < LARSON_SLOTS; i++) {
		size_t size = LARSON_MIN + rnd_below(&seed, LARSON_MAX - LARSON_MIN + 1);
		void *p = malloc(size);

		if (!p)
			oom();
		touch(p, size);
		atomic_store_explicit(&a->fill[i], p, memory_order_relaxed);
	}
	pthread_barrier_wait(a->start);

	/*
	 * Replace a random slot: allocate first, then swap the new block in and
	 * free what was there.  The swap is atomic so that with shared slots
	 * every block is freed exactly once, by whichever thread took it out;
	 * acq_rel orders the allocating thread's writes before the freeing
	 * thread's free().  The private-slot row runs the same instructions, so
	 * the two rows differ only in who frees what.
	 */
	for (uint64_t i = 0; i < a->n; i++) {
		size_t size = LARSON_MIN + rnd_below(&seed, LARSON_MAX - LARSON_MIN + 1);
		uint32_t k = rnd_below(&seed, a->nslots);
		void *p = malloc(size), *old;

		if (!p)
			oom();
		touch(p, size);
		old = atomic_exchange_explicit(&a->slot[k], p, memory_order_acq_rel);
		free(old);
	}
	return NULL;
}

/*
 * One op: one slot replaced (one free and one malloc of 16..512 B), counted
 * over both threads.  shared == 0: each thread has its own 4096 slots, every
 * free is local.  shared == 1: both threads pick from one array of 8192
 * slots, so about half the frees release a block the other thread allocated.
 */
static uint64_t run_larson(size_t shared, uint64_t ops)
{
	_Atomic(void *) *slot;
	struct larson_arg arg[LARSON_THREADS];
	pthread_t t[LARSON_THREADS];
	pthread_barrier_t start;
	uint64_t t0;

	slot = xmalloc(LARSON_THREADS * LARSON_SLOTS * sizeof(*slot));
	pthread_barrier_init(&start, NULL, LARSON_THREADS + 1);
	for (unsigned i = 0; i < LARSON_THREADS; i++) {
		arg[i].fill = slot + (size_t)i * LARSON_SLOTS;
		arg[i].slot = shared ? slot : arg[i].fill;
		arg[i].nslots = shared ? LARSON_THREADS * LARSON_SLOTS : LARSON_SLOTS;
		arg[i].n = ops / LARSON_THREADS;
		arg[i].seed = 0x243F6A8885A308D3ull * (i + 1u);
		arg[i].start = &start;
		start_thread(&t[i], larson_worker, &arg[i]);
	}
	pthread_barrier_wait(&start);
	t0 = now_ns();
	for (unsigned i = 0; i < LARSON_THREADS; i++)
		pthread_join(t[i], NULL);
	t0 = now_ns() - t0;

	pthread_barrier_destroy(&start);
	for (size_t i = 0; i < LARSON_THREADS * LARSON_SLOTS; i++)
		free(atomic_load_explicit(&slot[i], memory_order_relaxed));
	free(slot);
	return t0;
}

/* ---------------------------------------------------------------- rows -- */

struct row {
	const char *name;
	uint64_t (*run)(size_t arg, uint64_t ops); /* returns elapsed ns */
	size_t arg;
	uint64_t ops;		/* default work; --quick does a tenth */
	uint64_t unit;		/* ops is rounded down to a multiple of this */
	const char *what;
};

/*
 * Work per row, sized for about 0.2-0.5 s under glibc 2.36 on a 2-core
 * EPYC VM.  Other allocators may be several times slower on some rows (the
 * large sizes, when they return memory to the kernel on every free), so
 * the large rows are sized towards the low end.
 */
static const struct row rows[] = {
	{ "pair_16", run_pair, 16, 20000000, 1, "malloc(16)+write+free, 1 thread; op = pair" },
	{ "pair_64", run_pair, 64, 20000000, 1, "malloc(64)+write+free, 1 thread; op = pair" },
	{ "pair_256", run_pair, 256, 20000000, 1, "malloc(256)+write+free, 1 thread; op = pair" },
	{ "pair_1024", run_pair, 1024, 20000000, 1, "malloc(1024)+write+free, 1 thread; op = pair" },
	{ "pair_4096", run_pair, 4096, 20000000, 1, "malloc(4096)+write+free, 1 thread; op = pair" },
	{ "pair_32k", run_pair, 32 << 10, 10000000, 1, "malloc(32 KiB)+write first/last byte+free; op = pair" },
	{ "pair_256k", run_pair, 256 << 10, 3000000, 1, "malloc(256 KiB)+write first/last byte+free; op = pair" },
	{ "pair_1m", run_pair, 1 << 20, 3000000, 1, "malloc(1 MiB)+write first/last byte+free; op = pair" },
	{ "batch_lifo", run_batch, 0, 15000000, BATCH_N, "10000 x malloc(64), then free newest first; op = object" },
	{ "batch_random", run_batch, 1, 15000000, BATCH_N, "10000 x malloc(64), then free in random order; op = object" },
	{ "realloc_grow", run_realloc, 0, GROW_STEPS * 8000, GROW_STEPS, "realloc 16 B -> 64 KiB in +16 B steps; op = realloc call" },
	{ "xthread_spsc", run_xthread, 0, 5000000, 1, "2 threads: producer mallocs 64 B, consumer frees (SPSC ring); op = block" },
	{ "larson_local", run_larson, 0, 20000000, LARSON_THREADS, "2 threads replace random slots (16..512 B), own slots; op = replacement" },
	{ "larson_shared", run_larson, 1, 20000000, LARSON_THREADS, "2 threads replace random slots (16..512 B), shared slots: cross-thread frees; op = replacement" },
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

struct result {
	uint64_t ops;
	uint64_t ns;
	long peak_rss_kib;
	bool ok;
};

static uint64_t row_ops(const struct row *r, bool quick)
{
	uint64_t ops = quick ? r->ops / 10 : r->ops;

	ops -= ops % r->unit;
	return ops ? ops : r->unit;
}

static long self_peak_rss_kib(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ru.ru_maxrss; /* KiB on Linux */
}

static struct result run_here(const struct row *r, bool quick)
{
	struct result res;

	res.ops = row_ops(r, quick);
	res.ns = r->run(r->arg, res.ops);
	res.peak_rss_kib = self_peak_rss_kib();
	res.ok = true;
	return res;
}

/* Run one row in a child so that its ru_maxrss is the row's alone. */
static struct result run_forked(const struct row *r, bool quick)
{
	struct result res = { 0 };
	struct rusage ru;
	int fd[2], status;
	ssize_t got;
	pid_t pid;

	if (pipe(fd))
		die("pipe failed");
	fflush(NULL); /* nothing buffered may be written twice */
	pid = fork();
	if (pid < 0)
		die("fork failed");
	if (pid == 0) {
		close(fd[0]);
		res = run_here(r, quick);
		if (write(fd[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
			_exit(1);
		exit(0); /* let the allocator's exit hooks (stats) run */
	}
	close(fd[1]);
	do
		got = read(fd[0], &res, sizeof(res));
	while (got < 0 && errno == EINTR);
	close(fd[0]);
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR)
			die("wait4 failed");
	}
	if (got != (ssize_t)sizeof(res) || !WIFEXITED(status) || WEXITSTATUS(status)) {
		if (WIFSIGNALED(status))
			fprintf(stderr, "bench_simple: %s: killed by signal %d\n", r->name,
				WTERMSIG(status));
		else
			fprintf(stderr, "bench_simple: %s: failed\n", r->name);
		res.ok = false;
		return res;
	}
	res.peak_rss_kib = ru.ru_maxrss;
	return res;
}

/* --------------------------------------------------------------- main -- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_simple [--quick] [--list] [--only NAME[,NAME...]] [--json] [--no-fork]\n"
		"  --quick    a tenth of the work per row\n"
		"  --list     print the rows (name, description) and exit\n"
		"  --only     run only these rows (repeatable, comma-separated)\n"
		"  --json     print JSON instead of lines\n"
		"  --no-fork  run every row in this process (peak RSS is then cumulative)\n"
		"output: name ops seconds ns_per_op peak_rss_kib, one line per row\n");
}

/* Mark the rows named in a comma-separated list; false if one is unknown. */
static bool select_rows(const char *list, bool *want)
{
	const char *s = list;

	while (*s) {
		size_t len = strcspn(s, ",");
		bool found = false;

		for (size_t i = 0; i < NROWS; i++) {
			if (strlen(rows[i].name) == len && !strncmp(rows[i].name, s, len)) {
				want[i] = true;
				found = true;
			}
		}
		if (!found && len) {
			fprintf(stderr, "bench_simple: unknown row '%.*s' (see --list)\n", (int)len, s);
			return false;
		}
		s += len;
		if (*s == ',')
			s++;
	}
	return true;
}

int main(int argc, char **argv)
{
	bool quick = false, json = false, fork_rows = true, any = false, failed = false;
	bool want[NROWS] = { false };
	size_t selected = 0, printed = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick")) {
			quick = true;
		} else if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--no-fork")) {
			fork_rows = false;
		} else if (!strcmp(a, "--list")) {
			for (size_t k = 0; k < NROWS; k++)
				printf("%-14s %s\n", rows[k].name, rows[k].what);
			return 0;
		} else if (!strcmp(a, "--only") || !strncmp(a, "--only=", 7)) {
			const char *list = a[6] == '=' ? a + 7 : argv[++i];

			if (!list) {
				usage(stderr);
				return 2;
			}
			if (!select_rows(list, want))
				return 2;
			any = true;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "bench_simple: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	for (size_t k = 0; k < NROWS; k++) {
		if (!any)
			want[k] = true;
		selected += want[k];
	}
	/* One row: this process is the row's process, no fork needed. */
	if (selected == 1)
		fork_rows = false;

	if (json)
		printf("{\"quick\": %s, \"rows\": [", quick ? "true" : "false");
	for (size_t k = 0; k < NROWS; k++) {
		struct result res;
		double sec, ns_op;

		if (!want[k])
			continue;
		res = fork_rows ? run_forked(&rows[k], quick) : run_here(&rows[k], quick);
		if (!res.ok) {
			failed = true;
			continue;
		}
		sec = (double)res.ns / 1e9;
		ns_op = (double)res.ns / (double)res.ops;
		if (json)
			printf("%s\n  {\"name\": \"%s\", \"ops\": %" PRIu64 ", \"seconds\": %.6f, "
			       "\"ns_per_op\": %.3f, \"peak_rss_kib\": %ld}",
			       printed ? "," : "", rows[k].name, res.ops, sec, ns_op,
			       res.peak_rss_kib);
		else
			printf("%-14s %11" PRIu64 " %9.6f %9.3f %9ld\n", rows[k].name, res.ops, sec,
			       ns_op, res.peak_rss_kib);
		printed++;
		fflush(stdout);
	}
	if (json)
		printf("\n]}\n");
	return failed ? 1 : 0;
}
