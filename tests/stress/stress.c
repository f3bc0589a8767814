/*
 * stress.c - minutes of mixed, verified malloc traffic from many threads.
 *
 * `make stress` runs it for minutes on sheaf and on glibc (tests/stress/run.sh);
 * `make check` runs a few seconds of it.  It uses nothing but the standard
 * malloc family and pthreads and is not linked with sheaf: the same binary
 * runs on glibc and, with LD_PRELOAD=libsheaf.so, on sheaf, so that both do
 * the same work (the same seed gives the same random choices; the thread
 * interleaving differs).
 *
 * What runs at once:
 *   workers     (-t, default 2 x CPUs, at least 4) each own a table of live
 *               blocks and pick operations at random: malloc, calloc (checked
 *               zero), posix_memalign / aligned_alloc / memalign / valloc
 *               (alignment checked), realloc(NULL), realloc and reallocarray,
 *               realloc chains that grow a block through several size classes
 *               into large sizes and shrink it back (the kept prefix checked
 *               at every step), free; malloc_usable_size() >= the request.
 *               Sizes: mostly 8..256 B (log-uniform mixed with density 1/s^2),
 *               a tail to 32 KiB, 0.3% large (32 KiB..4 MiB) and 1% exactly
 *               at size-class, page and small/large boundaries.
 *   mailboxes   a worker posts blocks to another worker's mailbox (an array
 *               under a mutex); the receiver verifies them and frees,
 *               reallocs or adopts them: cross-thread frees and reallocs.
 *   churn       a thread that keeps starting short-lived threads: each
 *               allocates a few hundred blocks, frees blocks taken from a
 *               worker's mailbox, posts some of its own, frees the rest and
 *               exits, so per-thread allocator state is created and torn
 *               down all the time, with objects crossing into and out of it.
 *   controller  the main thread.  It forks while the others allocate: the
 *               child verifies and frees its copies of the controller's
 *               blocks and of the mailboxes' blocks (allocated by threads the
 *               child does not have), allocates from two threads, _exit(0)s.
 *               It runs memory-pressure phases: every worker grows its live
 *               set until they hold -p MiB together, then drops it; after
 *               malloc_trim(0) resident memory must have come back down.  And
 *               in a forked child it fills the address space up to an
 *               RLIMIT_AS: malloc must fail with ENOMEM rather than crash,
 *               and work again once blocks are freed.  When: the first fork
 *               at 30% of the run (at most 3 s in), then every 5 s; the
 *               first pressure phase at 50% (at most 5 s), then 10 s after
 *               the last one ended; the RLIMIT_AS child at 70% (at most
 *               40 s), then every 60 s.  So even a run of a few seconds has
 *               one of each.
 *
 * Every block carries a pattern computed from its id (a per-thread tag and a
 * counter: independent of the address, so a block laid over another one or a
 * stale copy does not match) and its size.  It is checked before every free
 * and realloc, on receipt from another thread, at rest, and in fork children.
 * Blocks are patterned byte for byte up to 64 KiB; beyond that the first 64
 * bytes of every page and the last 64 bytes carry it.  That still catches
 * every page-level error (a page lost, shared, left behind by mremap, a
 * recycled mapping handed out dirty) while the run is spent in the allocator
 * rather than in memset of 4 MiB blocks.  calloc memory is checked for zero
 * over the same bytes.
 *
 * Output: a line per memory-pressure phase, then one summary line
 *   stress: ok seconds=S workers=N seed=X ops=N ops_per_s=N peak_rss_kib=N ...
 * and exit 0; on the first problem the run stops early, and ends with
 *   stress: FAIL: <what failed> (N problems)
 * and exit 1.  A hang (a deadlock in the allocator) is ended by a watchdog
 * alarm with its own FAIL line.
 *
 * Options (the command line wins over the environment):
 *   -s SECONDS  STRESS_SECONDS       run time (default 10)
 *   -t THREADS  STRESS_THREADS       workers (default 2 x CPUs, at least 4)
 *   -S SEED     STRESS_SEED          repeat a run's random choices
 *   -p MIB      STRESS_PRESSURE_MIB  live set of a pressure phase (default 256; 0: none)
 *   -R          STRESS_NO_RLIMIT=1   no RLIMIT_AS child (e.g. under ASan, which
 *                                    reserves terabytes of address space)
 *
 * Build it with -fno-builtin-<name> for every malloc-family function, as
 * Makefile.am does: compilers drop allocations whose block is never used, and
 * clang assumes that aligned_alloc() and friends leave errno alone.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pattern.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define SLOTS_MAX    4096        /* live-block table of a worker... */
#define SLOTS_TOTAL  32768       /* ...and of all together, with many workers */
#define MBOX_CAP     128         /* blocks waiting in one worker's mailbox */
#define CTL_BLOCKS   48          /* the controller's blocks, checked by fork children */
#define CHILD_SLOTS  256         /* live-block table of a fork child's thread */
#define CHILD_OPS    20000       /* operations per fork child thread */
#define CHAIN_MAX    (4 * MIB)   /* largest size a realloc chain reaches */
#define DENSE_MAX    (64 * KIB)  /* patterned byte for byte up to here... */
#define STRIPE       64          /* ...beyond, this many bytes per page and at the end */
#define STRIPE_STEP  4096
#define FORK_EVERY   5.0         /* seconds between forks */
#define PRESSURE_EVERY 10.0      /* seconds between pressure phases */
#define RLIMIT_EVERY 60.0        /* seconds between RLIMIT_AS children */
#define RLIMIT_SLACK (64 * MIB)  /* address space a RLIMIT_AS child may still map */
#define CHILD_ALARM  60          /* seconds before a hung fork child dies of SIGALRM */
#define PHASE_TIMEOUT 60.0       /* seconds the workers get for a pressure step */

/* ----------------------------------------------------------- the state -- */

struct block {
	uint8_t *p;     /* NULL: empty slot */
	size_t size;    /* bytes asked for */
	uint64_t id;    /* tag << 40 | counter: unique and address-independent */
};

/* Whatever allocates: a worker, a short-lived thread, the controller, a child. */
struct actor {
	uint64_t rng;
	uint64_t tag;       /* high bits of every id it makes */
	uint64_t ids;
	uint64_t ops;       /* malloc-family calls */
	uint64_t verified;  /* bytes compared with their pattern (or with zero) */
	uint64_t errors;
};

struct mailbox {
	pthread_mutex_t lock;
	int n;
	struct block b[MBOX_CAP];
};

struct worker {
	_Alignas(64) struct mailbox box;
	struct actor a;
	pthread_t tid;
	int no;
	struct block *slots;
	uint64_t received;      /* blocks taken from its mailbox */
	unsigned int pgen;      /* last pressure step it carried out */
	struct block *pblocks;  /* its share of the pressure phase */
	size_t pn, pcap;
};

static struct {
	double seconds;
	int workers;
	uint64_t seed;
	size_t pressure;        /* bytes; 0: no pressure phases */
	bool rlimit;
} opt = { .seconds = 10, .pressure = 256 * MIB, .rlimit = true };

static struct worker *workers;
static int nworkers;
static unsigned int nslots;     /* entries in a worker's table */
static pthread_barrier_t end_barrier;
static atomic_int stopping;
static atomic_uint_fast64_t next_tag = 1;
static pid_t main_pid;
static size_t page_size;

/* The pressure phase: an odd generation means grow, an even one drop. */
static struct {
	atomic_uint gen;
	atomic_int done;        /* workers that carried out the current step */
	size_t share;           /* bytes per worker */
} pressure;

/* Problems: counted everywhere, the first one kept for the last line. */
static atomic_ulong problems;
static char first_problem[256];

/* Totals of the short-lived threads (the workers' stay in their structs). */
static atomic_uint_fast64_t eph_ops, eph_verified, eph_received, threads_created;

static struct actor ctl;                /* the controller's (main thread's) */
static struct block ctl_blocks[CTL_BLOCKS];

/* ------------------------------------------------------------- helpers -- */

static uint64_t mix(uint64_t x)         /* splitmix64 finaliser */
{
	x += 0x9e3779b97f4a7c15ull;
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

/*
 * write(2) rather than stdio for every message that can come from a fork
 * child or a signal handler: a stdio lock taken by a thread the child does
 * not have would never be released.
 */
static void say(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t k = write(fd, s, n);
		if (k <= 0)
			return;
		s += k;
		n -= (size_t)k;
	}
}

static void actor_init(struct actor *a, uint64_t seed)
{
	memset(a, 0, sizeof(*a));
	a->rng = mix(seed) | 1;
	a->tag = atomic_fetch_add(&next_tag, 1);
}

__attribute__((format(printf, 2, 3)))
static void problem(struct actor *a, const char *fmt, ...)
{
	char line[256], out[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	a->errors++;
	unsigned long n = atomic_fetch_add(&problems, 1);
	if (n == 0)
		memcpy(first_problem, line, sizeof(line));
	if (n < 20) {
		if (getpid() != main_pid)
			snprintf(out, sizeof(out), "stress: [child %d] %s\n", (int)getpid(), line);
		else
			snprintf(out, sizeof(out), "stress: %s\n", line);
		say(2, out);
	}
}

/* A field of /proc/self/status in KiB ("VmRSS:", "VmHWM:", "VmSize:"); 0
 * if unreadable.  read(), not stdio: used in fork children and under
 * RLIMIT_AS, where stdio's buffer might not be had. */
static size_t proc_kib(const char *field)
{
	char buf[8192];
	size_t len = 0;
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	while (len < sizeof(buf) - 1) {
		ssize_t k = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (k <= 0)
			break;
		len += (size_t)k;
	}
	close(fd);
	buf[len] = '\0';
	const char *p = strstr(buf, field);
	return p ? (size_t)strtoull(p + strlen(field), NULL, 10) : 0;
}

/* ------------------------------------------------------------ patterns -- */
/*
 * The patterns of tests/pattern.h; the seed depends on the
 * block's id and size, so that every block, and every size a block passes
 * through in a realloc chain, has its own pattern.
 */
static inline uint64_t seed_of(uint64_t id, size_t size)
{
	return mix(id ^ mix(size));
}

/* Writes the pattern over the patterned bytes of a block (see the top). */
static void fill(uint8_t *p, uint64_t seed, size_t size)
{
	if (size <= DENSE_MAX) {
		fill_range(p, seed, 0, size);
		return;
	}
	fill_range(p, seed, 0, DENSE_MAX);
	for (size_t pg = DENSE_MAX; pg < size; pg += STRIPE_STEP)
		fill_range(p, seed, pg, min_size(pg + STRIPE, size));
	fill_range(p, seed, size - STRIPE, size);
}

/*
 * Checks the patterned bytes of a `size`-byte block that lie below `to`
 * (to < size: the prefix a realloc kept).  Returns the first wrong byte or
 * SIZE_MAX; adds the bytes compared to *count.
 */
static size_t verify(const uint8_t *p, uint64_t seed, size_t size, size_t to, uint64_t *count)
{
	size_t dense = min_size(to, DENSE_MAX), bad;

	*count += dense;
	bad = check_range(p, seed, 0, dense);
	if (bad != SIZE_MAX || size <= DENSE_MAX)
		return bad;
	for (size_t pg = DENSE_MAX; pg < to; pg += STRIPE_STEP) {
		size_t e = min_size(pg + STRIPE, to);
		*count += e - pg;
		bad = check_range(p, seed, pg, e);
		if (bad != SIZE_MAX)
			return bad;
	}
	if (size - STRIPE < to) {
		*count += to - (size - STRIPE);
		return check_range(p, seed, size - STRIPE, to);
	}
	return SIZE_MAX;
}

/* Index of the first non-zero byte in [from, to), or SIZE_MAX. */
static size_t nonzero_range(const uint8_t *p, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (p[i])
			return i;
	return SIZE_MAX;
}

/* Index of the first non-zero byte, or SIZE_MAX. */
static size_t first_nonzero(const uint8_t *p, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		if (v)
			break;
	}
	return nonzero_range(p, i, n);
}

/*
 * calloc memory: the bytes that will carry the pattern must be zero.  The
 * same bytes as the pattern, not all of them: every page is still looked at,
 * while reading all of a 4 MiB block would map the zero page under all of it
 * only to fault each page again on the first write.
 */
static size_t check_zero(const uint8_t *p, size_t size, uint64_t *count)
{
	size_t bad;

	if (size <= DENSE_MAX) {
		*count += size;
		return first_nonzero(p, size);
	}
	*count += DENSE_MAX;
	bad = first_nonzero(p, DENSE_MAX);
	for (size_t pg = DENSE_MAX; pg < size && bad == SIZE_MAX; pg += STRIPE_STEP) {
		*count += min_size(pg + STRIPE, size) - pg;
		bad = nonzero_range(p, pg, min_size(pg + STRIPE, size));
	}
	if (bad == SIZE_MAX) {
		*count += STRIPE;
		bad = nonzero_range(p, size - STRIPE, size);
	}
	return bad;
}

static bool check_block(struct actor *a, const struct block *b, const char *when)
{
	uint64_t seed = seed_of(b->id, b->size);
	size_t bad = verify(b->p, seed, b->size, b->size, &a->verified);

	if (bad == SIZE_MAX)
		return true;
	problem(a, "block %#" PRIx64 " (%zu bytes at %p) corrupt %s: byte %zu is %#x, expected %#x",
		b->id, b->size, (void *)b->p, when, bad, b->p[bad], pat_byte(seed, bad));
	return false;
}

/* --------------------------------------------------------------- sizes -- */

/* Sizes exactly at boundaries: size classes, pages, sheaf's small/large
 * split (32 KiB), glibc's mmap threshold (128 KiB); 0 for malloc(0).  Few
 * of them large, so that they do not double the share of large blocks. */
static const size_t edge_sizes[] = {
	0, 1, 7, 8, 9, 15, 16, 17, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025,
	2048, 4095, 4096, 4097, 8192, 16384, 32767, 32768, 32769, 131072,
};

/* Log-uniform in [2^lo, 2^hi): every doubling equally likely. */
static size_t octaves(uint64_t r, unsigned int lo, unsigned int hi)
{
	unsigned int k = lo + (unsigned int)(r % (hi - lo));
	size_t base = (size_t)1 << k;
	return base + (size_t)((r >> 32) % base);
}

/*
 * What programs allocate: most blocks are small (strings, list and tree
 * nodes), a tail of buffers runs to tens of KiB, a few are large.  The small
 * part mixes a log-uniform distribution with density 1/s^2, which puts more
 * weight on the 8..32 B that dominate real traces.
 */
static size_t random_size(uint64_t *s)
{
	uint64_t r = rnd(s);
	unsigned int pick = (unsigned int)(r % 1000);

	r >>= 10;
	if (pick < 10)
		return edge_sizes[r % ARRAY_SIZE(edge_sizes)];
	if (pick < 520)
		return octaves(r, 3, 8);                /* 51%: 8..255 B, log-uniform */
	if (pick < 857) {                               /* 33.7%: 8..256 B, 1/s^2 */
		uint64_t u = r & 0xffff;
		return (size_t)((2048ull << 16) / ((256ull << 16) - 248 * u));
	}
	if (pick < 997)
		return octaves(r, 8, 15);               /* 14%: 256 B..32 KiB */
	return octaves(r, 15, 22) + 1;                  /* 0.3%: 32 KiB..4 MiB */
}

/* realloc(p, 0) frees p on glibc: realloc sizes are never 0. */
static size_t random_resize(uint64_t *s)
{
	size_t n = random_size(s);
	return n ? n : 1;
}

static size_t random_align(uint64_t *s, size_t min)
{
	uint64_t r = rnd(s);
	size_t a = (size_t)1 << (r % 13);                       /* 1..4096 */
	if ((r >> 8) % 64 == 0)
		a = (size_t)1 << (13 + (r >> 16) % 9);           /* rarely 8 KiB..2 MiB */
	return a < min ? min : a;
}

/* The alignment every malloc result of `size` bytes has on x86-64 and
 * aarch64 (glibc 16; sheaf 16 from 16 bytes, 8 below). */
static size_t natural_align(size_t size)
{
	return size >= 16 ? 16 : size >= 8 ? 8 : 1;
}

/* ---------------------------------------------------------- operations -- */

enum kind { K_MALLOC, K_CALLOC, K_POSIX_MEMALIGN, K_ALIGNED_ALLOC, K_MEMALIGN, K_VALLOC,
	    K_REALLOC_NULL };
static const char *const kind_name[] = {
	"malloc", "calloc", "posix_memalign", "aligned_alloc", "memalign", "valloc", "realloc(NULL)",
};

static enum kind random_kind(uint64_t *s)
{
	unsigned int r = (unsigned int)(rnd(s) % 100);
	if (r < 60)
		return K_MALLOC;
	if (r < 75)
		return K_CALLOC;
	if (r < 83)
		return K_POSIX_MEMALIGN;
	if (r < 90)
		return K_ALIGNED_ALLOC;
	if (r < 94)
		return K_MEMALIGN;
	if (r < 95)
		return K_VALLOC;
	return K_REALLOC_NULL;
}

/* Allocates `size` bytes into the empty *b with `kind`, checks and patterns
 * them.  False (reported, b still empty) if the allocation failed. */
static bool alloc_block(struct actor *a, struct block *b, size_t size, enum kind kind)
{
	size_t align = 0;
	void *p = NULL;

	errno = 0;
	switch (kind) {
	case K_MALLOC:
		p = malloc(size);
		break;
	case K_CALLOC:
		/* n elements of 8 bytes where that adds up: the allocator multiplies. */
		p = size && size % 8 == 0 ? calloc(size / 8, 8) : calloc(1, size);
		break;
	case K_POSIX_MEMALIGN: {
		align = random_align(&a->rng, sizeof(void *));
		int rc = posix_memalign(&p, align, size);
		if (rc) {
			p = NULL;
			errno = rc;
		}
		break;
	}
	case K_ALIGNED_ALLOC:
		align = random_align(&a->rng, 1);
		p = aligned_alloc(align, size);
		break;
	case K_MEMALIGN:
		align = random_align(&a->rng, 1);
		p = memalign(align, size);
		break;
	case K_VALLOC:
		align = page_size;
		p = valloc(size);
		break;
	case K_REALLOC_NULL:
		p = realloc(NULL, size);
		break;
	}
	a->ops++;
	if (!p) {
		problem(a, "%s(%zu) failed (errno %d, alignment %zu)", kind_name[kind], size, errno,
			align);
		return false;
	}
	size_t want = align ? align : natural_align(size);
	if ((uintptr_t)p & (want - 1))
		problem(a, "%s(%zu) returned %p, not %zu-byte aligned", kind_name[kind], size, p, want);
	if (malloc_usable_size(p) < size)
		problem(a, "malloc_usable_size(%p) = %zu after %s(%zu)", p, malloc_usable_size(p),
			kind_name[kind], size);
	if (kind == K_CALLOC) {
		size_t nz = check_zero(p, size, &a->verified);
		if (nz != SIZE_MAX)
			problem(a, "calloc(%zu) returned %p with byte %zu = %#x, not zero", size, p, nz,
				((uint8_t *)p)[nz]);
	}
	b->p = p;
	b->size = size;
	b->id = a->tag << 40 | ++a->ids;
	fill(b->p, seed_of(b->id, size), size);
	return true;
}

static void free_block(struct actor *a, struct block *b, const char *when)
{
	check_block(a, b, when);
	free(b->p);
	a->ops++;
	b->p = NULL;
}

/*
 * realloc (or reallocarray) of *b to `size` bytes: the whole block is
 * checked before, the prefix that must survive after, and the block gets the
 * pattern of its new size.  False (reported, *b unchanged) on failure.
 */
static bool realloc_block(struct actor *a, struct block *b, size_t size, bool array)
{
	uint64_t old_seed = seed_of(b->id, b->size);
	size_t old = b->size;
	uint8_t *q;

	check_block(a, b, "before realloc");
	errno = 0;
	q = array ? reallocarray(b->p, size, 1) : realloc(b->p, size);
	a->ops++;
	if (!q) {
		problem(a, "realloc(%p, %zu) of a %zu-byte block failed (errno %d)", (void *)b->p,
			size, old, errno);
		return false;
	}
	b->p = q;
	if ((uintptr_t)q & (natural_align(size) - 1))
		problem(a, "realloc to %zu bytes returned %p: misaligned", size, (void *)q);
	if (malloc_usable_size(q) < size)
		problem(a, "malloc_usable_size(%p) = %zu after realloc to %zu", (void *)q,
			malloc_usable_size(q), size);
	size_t bad = verify(q, old_seed, old, min_size(old, size), &a->verified);
	if (bad != SIZE_MAX)
		problem(a, "realloc of block %#" PRIx64 " from %zu to %zu bytes (%p) lost contents: "
			"byte %zu is %#x, expected %#x", b->id, old, size, (void *)q, bad, q[bad],
			pat_byte(old_seed, bad));
	b->size = size;
	fill(q, seed_of(b->id, size), size);
	return true;
}

/*
 * A realloc chain: a block that grows (or shrinks) step by step, as a
 * string builder or a vector does, crossing size classes and now and then
 * the small/large boundary up to CHAIN_MAX.
 */
static void realloc_chain(struct actor *a, struct block *b)
{
	int steps = 2 + (int)(rnd(&a->rng) % 11);
	bool big = rnd(&a->rng) % 16 == 0;

	for (int i = 0; i < steps; i++) {
		uint64_t r = rnd(&a->rng);
		size_t old = b->size ? b->size : 1, size;

		if (r % 5 < 3) {        /* grow by 10..200% (x2..x8 in a big chain) */
			size = big ? old * (2 + (r >> 8) % 7) : old + old * (10 + (r >> 8) % 191) / 100;
			size += 1 + (r >> 20) % 64;
		} else {                /* shrink to 10..90% */
			size = old * (10 + (r >> 8) % 81) / 100 + 1;
		}
		if (size > CHAIN_MAX)
			size = CHAIN_MAX - (r >> 32) % 4096;
		if (!realloc_block(a, b, size, (r >> 40) % 8 == 0))
			return;
	}
}

/* ----------------------------------------------------------- mailboxes -- */

/* Hands *b to w's mailbox (b becomes empty); false if the mailbox is full. */
static bool post(struct worker *w, struct block *b)
{
	bool done = false;

	pthread_mutex_lock(&w->box.lock);
	if (w->box.n < MBOX_CAP) {
		w->box.b[w->box.n++] = *b;
		done = true;
	}
	pthread_mutex_unlock(&w->box.lock);
	if (done)
		b->p = NULL;
	return done;
}

/* Takes up to `max` blocks out of w's mailbox into out[]. */
static int take(struct worker *w, struct block *out, int max)
{
	int n;

	pthread_mutex_lock(&w->box.lock);
	n = w->box.n < max ? w->box.n : max;
	w->box.n -= n;
	memcpy(out, w->box.b + w->box.n, (size_t)n * sizeof(*out));
	pthread_mutex_unlock(&w->box.lock);
	return n;
}

static struct worker *other_worker(struct actor *a, int self)
{
	int k = (int)(rnd(&a->rng) % (uint64_t)(nworkers - 1));
	return &workers[k >= self ? k + 1 : k];
}

/* A worker's post: blocks from other threads are freed, reallocated and
 * freed, or adopted into its table (freed or reallocated here later). */
static void receive(struct worker *w)
{
	struct block got[MBOX_CAP];
	struct actor *a = &w->a;
	int n = take(w, got, MBOX_CAP);

	for (int i = 0; i < n; i++) {
		struct block *g = &got[i];
		unsigned int r = (unsigned int)(rnd(&a->rng) % 100);
		struct block *slot = &w->slots[rnd(&a->rng) % nslots];

		w->received++;
		check_block(a, g, "on receipt from another thread");
		if (r >= 80)
			realloc_block(a, g, random_resize(&a->rng), false);
		if (r >= 50 && !slot->p)
			*slot = *g;
		else
			free_block(a, g, "before freeing a block from another thread");
	}
}

/* ------------------------------------------------------------ pressure -- */

static void pressure_grow(struct worker *w, size_t share)
{
	struct actor *a = &w->a;
	size_t bytes = 0;

	while (bytes < share) {
		uint64_t r = rnd(&a->rng);
		/* Half the bytes in slab-sized blocks, half in large ones: both
		 * the slabs and the large mappings must give memory back. */
		size_t size = bytes < share / 2 ? octaves(r, 4, 15) : octaves(r, 15, 20);

		if (w->pn == w->pcap) {
			size_t cap = w->pcap ? 2 * w->pcap : 1024;
			struct block *nb = realloc(w->pblocks, cap * sizeof(*nb));
			if (!nb) {
				problem(a, "realloc of a %zu-entry block array failed", cap);
				return;
			}
			w->pblocks = nb;
			w->pcap = cap;
		}
		if (!alloc_block(a, &w->pblocks[w->pn], size, r % 4 ? K_MALLOC : K_CALLOC))
			return;
		w->pn++;
		bytes += size;
	}
}

static void pressure_drop(struct worker *w)
{
	for (size_t i = 0; i < w->pn; i++)
		free_block(&w->a, &w->pblocks[i], "before the pressure phase's free");
	w->pn = 0;
}

/* Carries out a step the controller announced, if there is a new one. */
static void pressure_poll(struct worker *w)
{
	unsigned int g = atomic_load_explicit(&pressure.gen, memory_order_acquire);

	if (g == w->pgen)
		return;
	w->pgen = g;
	if (g & 1)
		pressure_grow(w, pressure.share);
	else
		pressure_drop(w);
	atomic_fetch_add_explicit(&pressure.done, 1, memory_order_release);
}

/* ------------------------------------------------------------- workers -- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct actor *a = &w->a;

	for (uint64_t n = 0;; n++) {
		if ((n & 31) == 0) {
			if (atomic_load_explicit(&stopping, memory_order_relaxed))
				break;
			pressure_poll(w);
			receive(w);
		}
		struct block *b = &w->slots[rnd(&a->rng) % nslots];
		unsigned int what = (unsigned int)(rnd(&a->rng) % 100);

		if (!b->p) {
			alloc_block(a, b, random_size(&a->rng), random_kind(&a->rng));
		} else if (what < 45) {
			free_block(a, b, "before free");
		} else if (what < 60) {
			realloc_block(a, b, random_resize(&a->rng), what == 59);
		} else if (what < 63) {
			realloc_chain(a, b);
		} else if (what < 75) {
			check_block(a, b, "before posting it to another thread");
			if (!post(other_worker(a, w->no), b))
				free_block(a, b, "before free");
		} else if (what < 90) {
			check_block(a, b, "at rest");
		} else if (malloc_usable_size(b->p) < b->size) {
			problem(a, "malloc_usable_size(%p) = %zu for a live %zu-byte block",
				(void *)b->p, malloc_usable_size(b->p), b->size);
		}
	}

	/* Nobody posts once everyone is past the barrier (the churn thread is
	 * joined before the controller arrives): empty the mailbox for good. */
	pthread_barrier_wait(&end_barrier);
	struct block got[MBOX_CAP];
	int n = take(w, got, MBOX_CAP);
	for (int i = 0; i < n; i++) {
		w->received++;
		free_block(a, &got[i], "in a mailbox at the end");
	}
	for (unsigned int i = 0; i < nslots; i++)
		if (w->slots[i].p)
			free_block(a, &w->slots[i], "at the end");
	pressure_drop(w);
	return NULL;
}

/* --------------------------------------------------------------- churn -- */

static void *ephemeral_main(void *arg)
{
	struct actor a;
	struct block got[8];
	uint64_t *seed = arg;

	actor_init(&a, *seed);
	free(seed);             /* allocated by the churn thread */

	int n = 16 + (int)(rnd(&a.rng) % 240);
	struct block *t = calloc((size_t)n, sizeof(*t));
	if (!t) {
		problem(&a, "calloc(%d, %zu) failed in a short-lived thread", n, sizeof(*t));
		return NULL;
	}
	for (int i = 0; i < n; i++)
		alloc_block(&a, &t[i], random_size(&a.rng), random_kind(&a.rng));

	/* Blocks posted for a worker, freed by a thread about to exit. */
	int k = take(&workers[rnd(&a.rng) % (uint64_t)nworkers], got, (int)ARRAY_SIZE(got));
	for (int i = 0; i < k; i++)
		free_block(&a, &got[i], "on receipt by a short-lived thread");

	for (int i = 0; i < n; i++) {
		if (!t[i].p)
			continue;
		switch (rnd(&a.rng) % 8) {
		case 0:         /* outlives this thread */
			check_block(&a, &t[i], "before posting it to a worker");
			if (!post(&workers[rnd(&a.rng) % (uint64_t)nworkers], &t[i]))
				free_block(&a, &t[i], "before free");
			break;
		case 1:
			realloc_block(&a, &t[i], random_resize(&a.rng), false);
			free_block(&a, &t[i], "before free");
			break;
		default:
			free_block(&a, &t[i], "before free");
		}
	}
	free(t);
	atomic_fetch_add(&eph_ops, a.ops);
	atomic_fetch_add(&eph_verified, a.verified);
	atomic_fetch_add(&eph_received, (uint64_t)k);
	return NULL;
}

static void *churn_main(void *arg)
{
	struct actor a;

	actor_init(&a, *(uint64_t *)arg);
	while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
		pthread_t t[4];
		int want = 1 + (int)(rnd(&a.rng) % 4), made = 0;

		while (made < want) {
			uint64_t *seed = malloc(sizeof(*seed));
			if (!seed) {
				problem(&a, "malloc(%zu) failed in the churn thread", sizeof(*seed));
				break;
			}
			*seed = rnd(&a.rng);
			int rc = pthread_create(&t[made], NULL, ephemeral_main, seed);
			if (rc) {
				free(seed);
				problem(&a, "pthread_create failed: %s", strerror(rc));
				break;
			}
			made++;
		}
		for (int i = 0; i < made; i++)
			pthread_join(t[i], NULL);
		atomic_fetch_add(&threads_created, (uint64_t)made);
		if (made < want)        /* a problem: the run is ending */
			break;
	}
	atomic_fetch_add(&eph_ops, a.ops);
	return NULL;
}

/* ---------------------------------------------------------- fork child -- */

/* Random work on a private table, as a worker does, without mailboxes. */
static void child_work(struct actor *a)
{
	struct block *t = calloc(CHILD_SLOTS, sizeof(*t));

	if (!t) {
		problem(a, "calloc of a fork child's table failed");
		return;
	}
	for (int op = 0; op < CHILD_OPS; op++) {
		struct block *b = &t[rnd(&a->rng) % CHILD_SLOTS];
		unsigned int what = (unsigned int)(rnd(&a->rng) % 100);

		if (!b->p)
			alloc_block(a, b, random_size(&a->rng), random_kind(&a->rng));
		else if (what < 50)
			free_block(a, b, "before free");
		else if (what < 75)
			realloc_block(a, b, random_resize(&a->rng), false);
		else if (what < 78)
			realloc_chain(a, b);
		else
			check_block(a, b, "at rest");
	}
	for (int i = 0; i < CHILD_SLOTS; i++)
		if (t[i].p)
			free_block(a, &t[i], "at the end");
	free(t);
}

static void *child_thread(void *arg)
{
	child_work(arg);
	return NULL;
}

/*
 * A child forked while every other thread of the parent was allocating:
 * whatever allocator lock one of them held must have been taken care of by
 * the allocator's fork handlers, or the child deadlocks (and dies of its
 * alarm).
 */
__attribute__((noreturn))
static void fork_child(void)
{
	struct actor a, ta;
	pthread_t t;

	signal(SIGALRM, SIG_DFL);
	alarm(CHILD_ALARM);
	actor_init(&a, ctl.rng ^ 0xc41d);
	actor_init(&ta, ctl.rng ^ 0x7417);

	/* The parent's blocks as they were at the fork. */
	for (int i = 0; i < CTL_BLOCKS; i++) {
		struct block *b = &ctl_blocks[i];
		if (!b->p)
			continue;
		if (i % 3 == 0)
			realloc_block(&a, b, random_resize(&a.rng), false);
		free_block(&a, b, "in a fork child (the parent's block)");
	}
	/* Blocks that workers, threads this child does not have, allocated.  A
	 * mailbox whose lock was held at the fork stays locked here: skipped. */
	for (int i = 0; i < nworkers; i++) {
		struct mailbox *m = &workers[i].box;
		if (pthread_mutex_trylock(&m->lock) != 0)
			continue;
		for (int k = 0; k < m->n; k++)
			free_block(&a, &m->b[k], "in a fork child (a mailbox block)");
		m->n = 0;
		pthread_mutex_unlock(&m->lock);
	}
	int rc = pthread_create(&t, NULL, child_thread, &ta);
	if (rc)
		problem(&a, "pthread_create in a fork child failed: %s", strerror(rc));
	child_work(&a);
	if (rc == 0)
		pthread_join(t, NULL);
	_exit(a.errors || ta.errors ? 1 : 0);
}

/* In the RLIMIT_AS child: an allocation that may fail, but only cleanly. */
static bool alloc_at_limit(struct actor *a, struct block *b, size_t size, bool zero)
{
	void *p;

	errno = 0;
	p = zero ? calloc(1, size) : malloc(size);
	a->ops++;
	if (!p) {
		if (errno != ENOMEM)
			problem(a, "RLIMIT_AS child: %s(%zu) returned NULL with errno %d, not ENOMEM",
				zero ? "calloc" : "malloc", size, errno);
		return false;
	}
	if (zero && check_zero(p, size, &a->verified) != SIZE_MAX)
		problem(a, "RLIMIT_AS child: calloc(%zu) memory not zero", size);
	b->p = p;
	b->size = size;
	b->id = a->tag << 40 | ++a->ids;
	fill(b->p, seed_of(b->id, size), size);
	return true;
}

/*
 * A child that fills its address space up to RLIMIT_AS: every allocation
 * that fails must return NULL with errno ENOMEM (no crash, no abort), the
 * blocks it has must stay intact, and after freeing them allocation must
 * work again under the same limit.
 */
__attribute__((noreturn))
static void rlimit_child(void)
{
	enum { CAP = 32768 };
	struct actor a;
	struct rlimit rl;
	size_t n = 0, nlarge, small_bytes = 0;
	bool failed = false, small_failed = false;
	char line[200];

	signal(SIGALRM, SIG_DFL);
	alarm(CHILD_ALARM);
	actor_init(&a, ctl.rng ^ 0x41a5);
	struct block *t = calloc(CAP, sizeof(*t));      /* before the limit */
	size_t vm = proc_kib("VmSize:") * KIB;
	if (!t || !vm || getrlimit(RLIMIT_AS, &rl) != 0) {
		problem(&a, "RLIMIT_AS child: cannot set up (table %p, VmSize %zu)", (void *)t, vm);
		_exit(1);
	}
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < vm + RLIMIT_SLACK)
		_exit(0);       /* a hard limit already below ours: nothing to test */
	rl.rlim_cur = vm + RLIMIT_SLACK;
	if (setrlimit(RLIMIT_AS, &rl) != 0) {
		problem(&a, "RLIMIT_AS child: setrlimit failed (errno %d)", errno);
		_exit(1);
	}

	/* Large blocks (mappings of their own) until the limit is hit. */
	while (!failed) {
		if (n == CAP / 2) {
			problem(&a, "RLIMIT_AS child: %zu blocks of 1 MiB with %zu MiB of address space "
				"to spare: malloc never failed", n, RLIMIT_SLACK / MIB);
			_exit(1);
		}
		if (alloc_at_limit(&a, &t[n], MIB + 4096 * (n % 7), n % 5 == 4))
			n++;
		else
			failed = true;
	}
	/* Small blocks: slabs and their metadata while mappings fail.  They may
	 * be served from address space reserved before: no failure required
	 * here, only a clean one. */
	nlarge = n;
	while (n < CAP && small_bytes < 256 * MIB) {
		uint64_t r = rnd(&a.rng);
		size_t size = octaves(r, 4, 15);
		if (!alloc_at_limit(&a, &t[n], size, r % 2)) {
			small_failed = true;
			break;
		}
		small_bytes += size;
		n++;
	}
	/* The other entry points at the limit: NULL + ENOMEM, or a good block. */
	void *p;
	errno = 0;
	p = aligned_alloc(64 * KIB, 8 * MIB);
	if (!p && errno != ENOMEM)
		problem(&a, "RLIMIT_AS child: aligned_alloc(64 KiB, 8 MiB) failed with errno %d", errno);
	free(p);
	errno = 0;
	p = NULL;
	if (posix_memalign(&p, 4096, 8 * MIB) != 0 && p)
		problem(&a, "RLIMIT_AS child: posix_memalign failed but set the pointer");
	free(p);
	if (n) {
		/* Fails (the old block must then be untouched: checked when it is
		 * freed below) or keeps the prefix. */
		struct block *b = &t[0];
		uint64_t old_seed = seed_of(b->id, b->size);
		errno = 0;
		p = realloc(b->p, 64 * MIB);
		if (p) {
			size_t bad = verify(p, old_seed, b->size, b->size, &a.verified);
			if (bad != SIZE_MAX)
				problem(&a, "RLIMIT_AS child: realloc to 64 MiB lost byte %zu", bad);
			b->p = p;
			b->size = 64 * MIB;
			fill(p, seed_of(b->id, b->size), b->size);
		} else if (errno != ENOMEM) {
			problem(&a, "RLIMIT_AS child: realloc to 64 MiB failed with errno %d", errno);
		}
	}

	/* Everything intact; freed; then the process works again. */
	for (size_t i = 0; i < n; i++)
		free_block(&a, &t[i], "in the RLIMIT_AS child");
	for (size_t i = 0; i < 16; i++)
		if (alloc_block(&a, &t[i], MIB + 4096 * i, K_MALLOC))
			free_block(&a, &t[i], "after the RLIMIT_AS test");
	for (size_t i = 0; i < 4000; i++)
		if (alloc_block(&a, &t[i], random_resize(&a.rng) % (32 * KIB) + 1, K_MALLOC))
			free_block(&a, &t[i], "after the RLIMIT_AS test");
	snprintf(line, sizeof(line), "stress: RLIMIT_AS child: %zu large blocks until ENOMEM, then "
		 "%zu small ones (%zu KiB)%s; %s after freeing them\n", nlarge, n - nlarge,
		 small_bytes / KIB, small_failed ? " until ENOMEM" : "",
		 a.errors ? "FAILED" : "allocates again");
	say(1, line);
	_exit(a.errors ? 1 : 0);
}

/* --------------------------------------------------------- controller -- */

static void wait_child(pid_t pid, const char *what)
{
	double deadline = now() + CHILD_ALARM + 30;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			problem(&ctl, "%s child %d: waitpid failed (errno %d)", what, (int)pid, errno);
			return;
		}
		if (now() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			problem(&ctl, "%s child %d hung (a deadlock after fork?)", what, (int)pid);
			return;
		}
		sleep_ms(5);
	}
	if (WIFSIGNALED(st))
		problem(&ctl, "%s child %d killed by signal %d%s", what, (int)pid, WTERMSIG(st),
			WTERMSIG(st) == SIGALRM ? " (hung: a deadlock after fork?)" : "");
	else if (WEXITSTATUS(st) != 0)
		problem(&ctl, "%s child %d exited with status %d (its reason above)", what, (int)pid,
			WEXITSTATUS(st));
}

/* The controller's own traffic, between events: its blocks keep changing,
 * so each fork child sees different ones. */
static void ctl_step(void)
{
	for (int i = 0; i < 8; i++) {
		struct block *b = &ctl_blocks[rnd(&ctl.rng) % CTL_BLOCKS];
		if (!b->p)
			alloc_block(&ctl, b, random_size(&ctl.rng), random_kind(&ctl.rng));
		else if (rnd(&ctl.rng) % 2)
			realloc_block(&ctl, b, random_resize(&ctl.rng), false);
		else
			free_block(&ctl, b, "before free");
	}
}

static uint64_t forks, rlimit_children;

static void ctl_fork(bool rlimit)
{
	for (int i = 0; i < CTL_BLOCKS; i++)
		if (!ctl_blocks[i].p)
			alloc_block(&ctl, &ctl_blocks[i], random_size(&ctl.rng), random_kind(&ctl.rng));
	/* at least one large block in the child's inheritance */
	if (ctl_blocks[0].p)
		realloc_block(&ctl, &ctl_blocks[0], MIB + rnd(&ctl.rng) % (3 * MIB), false);

	pid_t pid = fork();
	if (pid < 0) {
		problem(&ctl, "fork failed (errno %d)", errno);
		return;
	}
	if (pid == 0) {
		if (rlimit)
			rlimit_child();
		fork_child();
	}
	if (rlimit)
		rlimit_children++;
	else
		forks++;
	wait_child(pid, rlimit ? "RLIMIT_AS" : "fork");
}

static bool wait_workers(double timeout)
{
	double deadline = now() + timeout;

	while (atomic_load_explicit(&pressure.done, memory_order_acquire) < nworkers) {
		if (now() > deadline)
			return false;
		sleep_ms(1);
	}
	return true;
}

static int pressure_phases;
static int min_returned_pct = 100;

/*
 * All workers grow their live sets by opt.pressure bytes in all, hold them
 * a moment while the normal traffic goes on, and free them.  Resident
 * memory after malloc_trim(0) must have come most of the way back down:
 * the bound is generous (half the phase plus 64 MiB above where it
 * started), for the normal live set moves while this runs; the measured
 * share is reported either way.
 */
static void ctl_pressure(void)
{
	int phase = ++pressure_phases;
	size_t base = proc_kib("VmRSS:");

	pressure.share = opt.pressure / (size_t)nworkers;
	atomic_store(&pressure.done, 0);
	atomic_fetch_add_explicit(&pressure.gen, 1, memory_order_release);
	if (!wait_workers(PHASE_TIMEOUT)) {
		problem(&ctl, "pressure phase %d: workers did not grow their live sets in %.0f s",
			phase, PHASE_TIMEOUT);
		return;
	}
	size_t peak = proc_kib("VmRSS:");
	sleep_ms(100);
	atomic_store(&pressure.done, 0);
	atomic_fetch_add_explicit(&pressure.gen, 1, memory_order_release);
	if (!wait_workers(PHASE_TIMEOUT)) {
		problem(&ctl, "pressure phase %d: workers did not free their live sets in %.0f s",
			phase, PHASE_TIMEOUT);
		return;
	}
	malloc_trim(0);
	size_t after = proc_kib("VmRSS:");
	size_t grown = peak > base ? peak - base : 0;
	size_t back = peak > after ? peak - after : 0;
	int pct = grown ? (int)(100 * (back < grown ? back : grown) / grown) : 100;
	if (pct < min_returned_pct)
		min_returned_pct = pct;
	printf("stress: pressure phase %d: %zu MiB allocated and freed; RSS %zu MiB before, "
	       "%zu MiB at the peak, %zu MiB after malloc_trim(0) (%d%% of the growth returned)\n",
	       phase, opt.pressure / MIB, base / 1024, peak / 1024, after / 1024, pct);
	fflush(stdout);
	if (after > base + (opt.pressure / 2 + 64 * MIB) / KIB)
		problem(&ctl, "pressure phase %d: RSS %zu MiB after freeing %zu MiB and malloc_trim(0), "
			"%zu MiB before the phase: memory not returned", phase, after / 1024,
			opt.pressure / MIB, base / 1024);
}

/* --------------------------------------------------------------- main -- */

static void on_alarm(int sig)
{
	(void)sig;
	say(2, "stress: FAIL: still running long after its end (a deadlock?)\n");
	_exit(1);
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-s seconds] [-t threads] [-S seed] [-p pressure_mib] [-R]\n"
		"  (or STRESS_SECONDS, STRESS_THREADS, STRESS_SEED, STRESS_PRESSURE_MIB, "
		"STRESS_NO_RLIMIT=1)\n", argv0);
	exit(2);
}

static void parse_options(int argc, char **argv)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	const char *e;
	int c;

	opt.workers = cpus > 2 ? 2 * (int)cpus : 4;
	opt.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if ((e = getenv("STRESS_SECONDS")) && *e)
		opt.seconds = strtod(e, NULL);
	if ((e = getenv("STRESS_THREADS")) && *e)
		opt.workers = atoi(e);
	if ((e = getenv("STRESS_SEED")) && *e)
		opt.seed = strtoull(e, NULL, 0);
	if ((e = getenv("STRESS_PRESSURE_MIB")) && *e)
		opt.pressure = (size_t)strtoull(e, NULL, 0) * MIB;
	if ((e = getenv("STRESS_NO_RLIMIT")) && *e && strcmp(e, "0") != 0)
		opt.rlimit = false;
	while ((c = getopt(argc, argv, "s:t:S:p:Rh")) != -1) {
		switch (c) {
		case 's': opt.seconds = strtod(optarg, NULL); break;
		case 't': opt.workers = atoi(optarg); break;
		case 'S': opt.seed = strtoull(optarg, NULL, 0); break;
		case 'p': opt.pressure = (size_t)strtoull(optarg, NULL, 0) * MIB; break;
		case 'R': opt.rlimit = false; break;
		default: usage(argv[0]);
		}
	}
	if (optind != argc || !(opt.seconds > 0) || opt.workers < 2 || opt.workers > 1024)
		usage(argv[0]);
}

int main(int argc, char **argv)
{
	pthread_t churn;
	uint64_t churn_seed;

	parse_options(argc, argv);
	main_pid = getpid();
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	nworkers = opt.workers;
	/* Many workers share out the live set rather than multiply it. */
	nslots = SLOTS_TOTAL / (unsigned int)nworkers;
	nslots = nslots > SLOTS_MAX ? SLOTS_MAX : nslots < 256 ? 256 : nslots;
	printf("stress: seed %" PRIu64 " (-S %" PRIu64 " repeats the random choices), %.1f s, "
	       "%d workers, pressure phases of %zu MiB%s\n", opt.seed, opt.seed, opt.seconds,
	       nworkers, opt.pressure / MIB, opt.rlimit ? ", RLIMIT_AS child" : "");
	fflush(stdout);
	signal(SIGALRM, on_alarm);
	alarm((unsigned int)opt.seconds + 300);

	if (posix_memalign((void **)&workers, 64, (size_t)nworkers * sizeof(*workers)) != 0) {
		fprintf(stderr, "stress: FAIL: cannot allocate the workers\n");
		return 1;
	}
	memset(workers, 0, (size_t)nworkers * sizeof(*workers));
	pthread_barrier_init(&end_barrier, NULL, (unsigned int)nworkers + 1);
	actor_init(&ctl, opt.seed);
	for (int i = 0; i < nworkers; i++) {
		struct worker *w = &workers[i];
		w->no = i;
		actor_init(&w->a, opt.seed + (uint64_t)(i + 1) * 0x1234567ull);
		pthread_mutex_init(&w->box.lock, NULL);
		w->slots = calloc(nslots, sizeof(*w->slots));
		if (!w->slots) {
			fprintf(stderr, "stress: FAIL: cannot allocate the workers' tables\n");
			return 1;
		}
	}

	double t0 = now(), end = t0 + opt.seconds;
	double next_fork = t0 + (opt.seconds * 0.3 < 3 ? opt.seconds * 0.3 : 3);
	double next_pressure = t0 + (opt.seconds * 0.5 < 5 ? opt.seconds * 0.5 : 5);
	double next_rlimit = t0 + (opt.seconds * 0.7 < 40 ? opt.seconds * 0.7 : 40);
	for (int i = 0; i < nworkers; i++) {
		int rc = pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]);
		if (rc) {
			fprintf(stderr, "stress: FAIL: pthread_create: %s\n", strerror(rc));
			return 1;
		}
	}
	churn_seed = mix(opt.seed ^ 0xc4);
	if (pthread_create(&churn, NULL, churn_main, &churn_seed) != 0) {
		fprintf(stderr, "stress: FAIL: cannot start the churn thread\n");
		return 1;
	}

	/* The controller: events when they are due, its own traffic between. */
	while (!atomic_load(&problems)) {
		double t = now();
		if (t >= end)
			break;
		if (t >= next_fork) {
			ctl_fork(false);
			next_fork += FORK_EVERY;
		} else if (opt.pressure && t >= next_pressure) {
			ctl_pressure();
			next_pressure = now() + PRESSURE_EVERY;
		} else if (opt.rlimit && t >= next_rlimit) {
			ctl_fork(true);
			next_rlimit += RLIMIT_EVERY;
		} else {
			ctl_step();
			sleep_ms(10);
		}
	}

	atomic_store(&stopping, 1);
	pthread_join(churn, NULL);
	pthread_barrier_wait(&end_barrier);
	uint64_t ops = atomic_load(&eph_ops) + ctl.ops, verified = atomic_load(&eph_verified);
	uint64_t received = atomic_load(&eph_received);
	for (int i = 0; i < nworkers; i++) {
		struct worker *w = &workers[i];
		pthread_join(w->tid, NULL);
		ops += w->a.ops;
		verified += w->a.verified;
		received += w->received;
	}
	double elapsed = now() - t0;
	for (int i = 0; i < CTL_BLOCKS; i++)
		if (ctl_blocks[i].p)
			free_block(&ctl, &ctl_blocks[i], "at the end");
	verified += ctl.verified;
	for (int i = 0; i < nworkers; i++) {
		struct worker *w = &workers[i];
		if (w->box.n)
			problem(&ctl, "%d blocks left in worker %d's mailbox", w->box.n, i);
		pthread_mutex_destroy(&w->box.lock);
		free(w->slots);
		free(w->pblocks);
	}
	free(workers);
	pthread_barrier_destroy(&end_barrier);
	malloc_trim(0);

	struct rusage ru;
	size_t hwm = proc_kib("VmHWM:");
	if (!hwm && getrusage(RUSAGE_SELF, &ru) == 0)
		hwm = (size_t)ru.ru_maxrss;
	unsigned long n_problems = atomic_load(&problems);
	printf("stress: %s seconds=%.1f workers=%d seed=%" PRIu64 " ops=%" PRIu64 " ops_per_s=%.0f "
	       "peak_rss_kib=%zu end_rss_kib=%zu forks=%" PRIu64 " rlimit_children=%" PRIu64
	       " threads_created=%" PRIu64 " cross_thread=%" PRIu64 " verified_mib=%" PRIu64
	       " pressure_phases=%d rss_returned_pct=%d\n",
	       n_problems ? "FAILED" : "ok", elapsed, nworkers, opt.seed, ops, (double)ops / elapsed,
	       hwm, proc_kib("VmRSS:"), forks, rlimit_children,
	       atomic_load(&threads_created) + (uint64_t)nworkers + 1, received, verified / MIB,
	       pressure_phases, min_returned_pct);
	if (n_problems) {
		printf("stress: FAIL: %s (%lu problem%s)\n", first_problem, n_problems,
		       n_problems == 1 ? "" : "s");
		return 1;
	}
	return 0;
}
