/*
 * fuzz_alloc.c - sheaf's public API driven by fuzzer input, against a model.
 *
 * The input is a program: each operation is one byte (which operation) and
 * a few argument bytes (slot, size, alignment, cache, offset ...); bytes
 * past the end read as 0, so every byte string is a valid program.  The
 * operations are the malloc family under its sheaf_* names (malloc, calloc,
 * realloc, reallocarray, aligned_alloc, posix_memalign, memalign, valloc,
 * pvalloc, free, free_sized, free_aligned_sized, malloc_usable_size,
 * malloc_trim), slab caches (create with sizes, alignments, flags and a
 * constructor chosen by the input; alloc, free, alloc_bulk, free_bulk,
 * destroy, also while objects are live: EBUSY), rcu_free() of malloc blocks
 * and cache objects with the rcu_ptr / rcu_head field at an offset chosen by
 * the input, rcu_free_mightsleep(), quiescent states, rcu_free_barrier() and
 * sheaf_cache_rcu_barrier(), the signal-safe sheaf_malloc_nolock(),
 * sheaf_free_nolock() and rcu_free_nolock() (called from ordinary code),
 * impossible requests, injected mmap failures (page_fail_next) and
 * short-lived threads that run part of the program.
 *
 * The model (up to NSLOTS live blocks) checks after every operation what
 * the API promises:
 *   - contents: every block is filled, up to its usable size, with a
 *     pattern derived from its id, and verified before it is freed or
 *     reallocated, after malloc_trim and at the end; realloc keeps the
 *     bytes both sizes have; calloc memory is zero; an object of a cache
 *     with a constructor comes out of the cache in its constructed state
 *     (except the bytes of rcu fields used in that cache: rcu_free() may
 *     link an object through its field, as the kernel's kfree_rcu() writes
 *     its rcu_head);
 *   - sizes: usable size >= the request (pvalloc: whole pages), stable while
 *     the block lives; a cache object's usable size is the cache's size;
 *   - alignment: 8, or 16 from 16 bytes on, for malloc; the requested power
 *     of two (rounded up for memalign) for the aligned functions; the page
 *     for valloc/pvalloc; the cache's alignment (64 with HWCACHE_ALIGN);
 *   - no two live blocks overlap (usable ranges), and a block handed to
 *     rcu_free() is neither reused nor written (apart from its rcu field)
 *     while a grace period cannot have ended: this thread is a registered,
 *     online liburcu-qsbr reader that reports no quiescent state, so no
 *     grace period can end until it does (see go_offline());
 *   - errors: NULL + ENOMEM for impossible sizes and overflows (the old
 *     block of a failed realloc intact), EINVAL for bad alignments (and
 *     *memptr untouched), sheaf_cache_create() EINVAL for bad arguments,
 *     sheaf_cache_destroy() -1/EBUSY with live objects, 0 without, even with
 *     rcu_free()'d objects still pending; with mmap failures injected an
 *     allocation may fail, but only with NULL + ENOMEM;
 *   - accounting: once an input's blocks are all freed (after a barrier),
 *     sheaf_stats_get()'s allocs - frees is back where it started.
 *
 * Every input ends with everything freed, the caches destroyed, injection
 * off and malloc_trim(0), so inputs barely depend on each other and a crash
 * reproduces from its input alone.
 *
 * Known bugs: when a lib/ bug that this target hits at once cannot be fixed
 * right away, guard the input that reaches it with #ifdef FUZZ_AVOID_<NAME>
 * and list it here, so that the fuzzer can look for others meanwhile (make
 * fuzz FUZZ_CFLAGS=-DFUZZ_AVOID_<NAME>); remove both with the fix.  None at
 * present.  (The first find, aligned_alloc / posix_memalign / memalign of
 * size 0 with an alignment above 4096 returning an unmapped pointer that
 * free() rejected, was fixed in large_alloc().)
 *
 * Built two ways: with clang -fsanitize=fuzzer,address,undefined as a
 * libFuzzer target (make fuzz), and with any compiler together with
 * fuzz_main.c, a plain driver that runs the corpus and random inputs (make
 * check).  Links the core statically (page_fail_next is internal).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "sheaf.h"
#include "sheaf/rcu.h"

/* lib/internal.h (the core is linked statically): the next n mmaps fail. */
void page_fail_next(unsigned int n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The model's checking loops are not what the fuzzer should learn from, and
 * with coverage instrumentation (every compare traced) they would take most
 * of its time: they are left uninstrumented.
 */
#if defined(__clang__) && __clang_major__ >= 13
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define NO_COVERAGE
#endif

#define NSLOTS   64
#define NCACHES  4
#define NPENDING 256
#define PAGE     4096u
#define SMALL_MAX 32768u

/* ------------------------------------------------------------- reporting */
static unsigned long op_index;  /* operation number within the input */

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fuzz_alloc: operation %lu: ", op_index);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* SHEAF_FUZZ_TRACE=1: one line per operation and block on stderr; 2: and
 * every block verified after every operation (finds the culprit). */
static int trace;
#define TRACE(...)                                                                     \
	do {                                                                           \
		if (trace)                                                             \
			fprintf(stderr, __VA_ARGS__);                                  \
	} while (0)

#define EXPECT(cond, ...)                                                              \
	do {                                                                           \
		if (!(cond))                                                           \
			fail(__VA_ARGS__);                                             \
	} while (0)

/* ----------------------------------------------------------------- input */
struct reader {
	const uint8_t *p;
	size_t n, i;
};

static uint8_t get8(struct reader *r)
{
	return r->i < r->n ? r->p[r->i++] : 0;
}

/*
 * A size: mostly small, some up to 64 KiB, a few large (up to 1 MiB past the
 * small/large boundary), and the edges that matter exactly.
 */
static size_t get_size(struct reader *r)
{
	static const size_t edges[] = {
		0, 1, 7, 8, 9, 15, 16, 17, 24, 128, 129, 1024, 1025, 4095, 4096, 4097,
		32767, 32768, 32769, 36864, 65536, 65537, (1u << 20) - 1, 1u << 20,
		(2u << 20) + 1, 4u << 20, 12288, 16384, 20480, 640, 96, 160,
	};
	uint8_t b0 = get8(r), b1 = get8(r);
	unsigned int hi = b0 >> 2;
	switch (b0 & 3) {
	case 0:
	case 1:
		return (size_t)(hi & 3) * 256 + b1;                   /* 0 .. 1023 */
	case 2:
		return ((size_t)hi * 256 + b1) * 4;                    /* 0 .. 65532 */
	default:
		if (hi >= 32)
			return edges[(hi * 256u + b1) % (sizeof(edges) / sizeof(edges[0]))];
		return SMALL_MAX + ((size_t)hi * 256 + b1) * 128;      /* 32 KiB .. 1 MiB */
	}
}

/* ------------------------------------------------------------------ model */
enum kind { K_NONE, K_MALLOC, K_CACHE };

struct block {
	uint8_t *p;
	size_t req;        /* bytes asked for                        */
	size_t usable;     /* sheaf_malloc_usable_size() at birth    */
	size_t align;      /* alignment asked for (0: plain malloc)  */
	uint32_t id;       /* pattern seed                           */
	uint8_t kind;
	uint8_t cache;     /* K_CACHE: index into caches[]           */
};

struct cache {
	struct sheaf_cache *c;
	size_t size, align;  /* object size; effective alignment */
	unsigned int flags;
	bool ctor;
	unsigned int live;   /* objects allocated (not rcu_free'd) */
	uint32_t gen;        /* for the name */
	/* rcu_free() may link an object through its rcu field (rcu.h): in a
	 * cache with a constructor those bytes are then not constructed when
	 * the object comes back.  The hull of the fields used so far. */
	size_t clob_lo, clob_hi;
};

/* A block handed to rcu_free() while no grace period could end. */
struct pending {
	uint8_t *p;
	size_t usable;
	size_t field, field_len;   /* bytes rcu_free may write */
	uint32_t id;
	bool ctor;                 /* cache with constructor: ctor pattern */
	uint8_t cache;
};

static struct block slots[NSLOTS];
static struct cache caches[NCACHES];
static struct pending pend[NPENDING];
static unsigned int npend;
static uint32_t next_id = 1;
static bool faults_armed;       /* page_fail_next() in force this input */
static bool tiny_build;         /* SHEAF_BUILD_TINY: rcu_free_mightsleep() waits */
static bool online;             /* registered reader, online */
static bool in_thread;          /* running inside an xthread op */
static bool rcu_used;

/* Constructor patterns: ctor_k fills the object of cache slot k. */
static size_t ctor_size[NCACHES];

static uint8_t ctor_byte(unsigned int k)
{
	return (uint8_t)(0xc0 + k);
}

#define CTOR(k)                                                                        \
	static void ctor_##k(void *obj)                                                \
	{                                                                              \
		memset(obj, ctor_byte(k), ctor_size[k]);                               \
	}
CTOR(0)
CTOR(1)
CTOR(2)
CTOR(3)
static void (*const ctors[NCACHES])(void *) = { ctor_0, ctor_1, ctor_2, ctor_3 };

/*
 * The pattern: word k (bytes 8k..8k+7) of block `id` holds patw(id, k), so
 * that blocks are filled and checked a word at a time (blocks are at least
 * 8-byte aligned); pat() is its byte i.
 */
NO_COVERAGE static inline uint64_t patw(uint32_t id, size_t k)
{
	uint64_t x = ((uint64_t)k + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)id * 0xd6e8feb86659fd93ull;
	return x ^ (x >> 29);
}

NO_COVERAGE static inline uint8_t pat(uint32_t id, size_t i)
{
	return (uint8_t)(patw(id, i >> 3) >> ((i & 7) * 8));
}

/*
 * Which bytes of a block are filled and checked: all of them up to 64 KiB;
 * beyond, the first and last 4 KiB and one 64-byte line per 16 pages (a
 * large block may be megabytes: touching all of it would make the fuzzer
 * spend its time in page faults).
 */
#define DENSE_MAX 65536u
#define SPARSE_STEP (16 * PAGE)

NO_COVERAGE static void fill_range(uint8_t *p, size_t from, size_t to, uint32_t id)
{
	size_t i = from;
	for (; i < to && (i & 7); i++)
		p[i] = pat(id, i);
	for (; i + 8 <= to; i += 8) {
		uint64_t w = patw(id, i >> 3);
		memcpy(p + i, &w, 8);
	}
	for (; i < to; i++)
		p[i] = pat(id, i);
}

/* First byte of [from, to) not holding the pattern, or SIZE_MAX. */
NO_COVERAGE static size_t check_range(const uint8_t *p, size_t from, size_t to, uint32_t id)
{
	size_t i = from;
	for (; i < to && (i & 7); i++)
		if (p[i] != pat(id, i))
			return i;
	for (; i + 8 <= to; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w != patw(id, i >> 3))
			break;   /* find the byte below */
	}
	for (; i < to; i++)
		if (p[i] != pat(id, i))
			return i;
	return SIZE_MAX;
}

NO_COVERAGE static void for_sampled(size_t n, void (*fn)(size_t from, size_t to, void *arg), void *arg)
{
	if (n <= DENSE_MAX) {
		fn(0, n, arg);
		return;
	}
	fn(0, PAGE, arg);
	for (size_t off = SPARSE_STEP; off + PAGE < n; off += SPARSE_STEP)
		fn(off, off + 64, arg);
	fn(n - PAGE, n, arg);
}

struct fill_arg {
	uint8_t *p;
	uint32_t id;
	size_t skip_lo, skip_hi;   /* not checked (rcu field) */
	size_t limit;              /* checked below this offset only */
	size_t bad;
};

NO_COVERAGE static void fill_cb(size_t from, size_t to, void *arg)
{
	struct fill_arg *a = arg;
	fill_range(a->p, from, to, a->id);
}

NO_COVERAGE static void check_cb(size_t from, size_t to, void *arg)
{
	struct fill_arg *a = arg;
	if (a->bad != SIZE_MAX)
		return;
	if (to > a->limit)
		to = a->limit;
	if (from >= to)
		return;
	/* [from, to) minus [skip_lo, skip_hi) */
	size_t lo_end = to < a->skip_lo ? to : a->skip_lo;
	if (from < lo_end)
		a->bad = check_range(a->p, from, lo_end, a->id);
	size_t hi_start = from > a->skip_hi ? from : a->skip_hi;
	if (a->bad == SIZE_MAX && hi_start < to)
		a->bad = check_range(a->p, hi_start, to, a->id);
}

NO_COVERAGE static void fill_block(uint8_t *p, size_t n, uint32_t id)
{
	struct fill_arg a = { p, id, 0, 0, SIZE_MAX, SIZE_MAX };
	for_sampled(n, fill_cb, &a);
}

/* SIZE_MAX if the block holds its pattern, else the first bad offset. */
NO_COVERAGE static size_t check_block(const uint8_t *p, size_t n, uint32_t id, size_t skip_lo, size_t skip_hi)
{
	struct fill_arg a = { (uint8_t *)p, id, skip_lo, skip_hi, SIZE_MAX, SIZE_MAX };
	for_sampled(n, check_cb, &a);
	return a.bad;
}

/* The same for the first `keep` bytes of a block that was filled as one of
 * `filled` bytes (realloc: what both sizes have). */
NO_COVERAGE static size_t check_prefix(const uint8_t *p, size_t filled, size_t keep, uint32_t id)
{
	struct fill_arg a = { (uint8_t *)p, id, 0, 0, keep, SIZE_MAX };
	for_sampled(filled, check_cb, &a);
	return a.bad;
}

NO_COVERAGE static size_t first_not(const uint8_t *p, size_t n, uint8_t v, size_t skip_lo, size_t skip_hi)
{
	uint64_t vw = 0x0101010101010101ull * v;
	size_t i = 0;
	while (i < n) {
		if (i + 8 <= n && (i + 8 <= skip_lo || i >= skip_hi)) {
			uint64_t w;
			memcpy(&w, p + i, 8);
			if (w == vw) {
				i += 8;
				continue;
			}
		}
		if (p[i] != v && (i < skip_lo || i >= skip_hi))
			return i;
		i++;
	}
	return SIZE_MAX;
}

NO_COVERAGE static bool ranges_overlap(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	if (!na)
		na = 1;
	if (!nb)
		nb = 1;
	return a < b + nb && b < a + na;
}

/* A new block must not overlap any live block or any pending rcu block. */
NO_COVERAGE static void check_no_overlap(const uint8_t *p, size_t n, int self)
{
	for (int i = 0; i < NSLOTS; i++) {
		if (i == self || slots[i].kind == K_NONE)
			continue;
		EXPECT(!ranges_overlap(p, n, slots[i].p, slots[i].usable),
		       "new block %p (+%zu) overlaps live block %p (+%zu) of slot %d", (void *)p, n,
		       (void *)slots[i].p, slots[i].usable, i);
	}
	for (unsigned int i = 0; i < npend; i++)
		EXPECT(!ranges_overlap(p, n, pend[i].p, pend[i].usable),
		       "new block %p (+%zu) overlaps %p (+%zu), rcu_free()'d while no grace period "
		       "could end", (void *)p, n, (void *)pend[i].p, pend[i].usable);
}

static void verify_slot(int s, const char *when)
{
	struct block *b = &slots[s];
	size_t bad = check_block(b->p, b->usable, b->id, 0, 0);
	EXPECT(bad == SIZE_MAX, "%s: block %p (slot %d, %zu usable, asked %zu) byte %zu changed "
	       "(0x%02x, want 0x%02x; word there 0x%016llx)", when, (void *)b->p, s, b->usable,
	       b->req, bad, bad == SIZE_MAX ? 0 : b->p[bad], bad == SIZE_MAX ? 0 : pat(b->id, bad),
	       bad == SIZE_MAX ? 0ull : (unsigned long long)*(uint64_t *)(void *)(b->p + (bad & ~(size_t)7)));
	EXPECT(sheaf_malloc_usable_size(b->p) == b->usable,
	       "%s: usable size of %p changed from %zu to %zu", when, (void *)b->p, b->usable,
	       sheaf_malloc_usable_size(b->p));
}

NO_COVERAGE static void verify_pending(void)
{
	for (unsigned int i = 0; i < npend; i++) {
		struct pending *q = &pend[i];
		size_t hi = q->field + q->field_len;
		size_t bad = q->ctor ? first_not(q->p, q->usable, ctor_byte(q->cache), q->field, hi) :
				       check_block(q->p, q->usable, q->id, q->field, hi);
		EXPECT(bad == SIZE_MAX,
		       "block %p (+%zu), rcu_free()'d while no grace period could end, changed at "
		       "byte %zu", (void *)q->p, q->usable, bad);
	}
}

NO_COVERAGE static void verify_all(const char *when)
{
	for (int s = 0; s < NSLOTS; s++)
		if (slots[s].kind != K_NONE)
			verify_slot(s, when);
	verify_pending();
}

/* ------------------------------------------------------- grace periods */
/*
 * While this thread is online (and reports no quiescent state) no grace
 * period can end, so everything rcu_free()'d stays allocated and intact:
 * pend[] is checked.  Going offline (a barrier needs it, or an explicit
 * quiescent state) lets grace periods end: pend[] is forgotten.
 */
static void forget_pending(void)
{
	npend = 0;
}

static void go_offline(void)
{
	forget_pending();
	if (!in_thread && online) {
		rcu_thread_offline();
		online = false;
	}
}

static void go_online(void)
{
	if (!in_thread && !online) {
		rcu_thread_online();
		online = true;
	}
}

/* -------------------------------------------------------- malloc blocks */
static size_t malloc_align_of(size_t n)
{
	return n >= 16 ? 16 : 8;
}

static void free_slot_raw(int s)
{
	slots[s].kind = K_NONE;
	slots[s].p = NULL;
}

/* Records a fresh block in slot s (already empty) and fills it. */
static void add_block(int s, void *p, size_t req, size_t align, size_t want_align,
		      size_t min_usable, bool zeroed, const char *fn)
{
	uint8_t *b = p;
	EXPECT(((uintptr_t)b & (want_align - 1)) == 0, "%s(%zu, align %zu) = %p: not aligned to %zu",
	       fn, req, align, p, want_align);
	size_t u = sheaf_malloc_usable_size(b);
	EXPECT(u >= min_usable, "%s(%zu): usable size %zu < %zu", fn, req, u, min_usable);
	if (zeroed) {
		size_t bad = first_not(b, req, 0, 0, 0);
		EXPECT(bad == SIZE_MAX, "%s(%zu) = %p: byte %zu not zero", fn, req, p, bad);
	}
	check_no_overlap(b, u, s);
	struct block *blk = &slots[s];
	TRACE("  slot %d = %s(%zu, align %zu) = %p usable %zu\n", s, fn, req, align, p, u);
	blk->p = b;
	blk->req = req;
	blk->usable = u;
	blk->align = align;
	blk->id = next_id++;
	blk->kind = K_MALLOC;
	blk->cache = 0;
	fill_block(b, u, blk->id);
}

/* An allocation returned NULL: fine only for an injected mmap failure. */
static void alloc_failed(const char *fn, size_t n, int err)
{
	EXPECT(faults_armed, "%s(%zu) = NULL (errno %d) without a reason", fn, n, err);
	EXPECT(err == ENOMEM, "%s(%zu) = NULL under mmap failure with errno %d, not ENOMEM", fn, n,
	       err);
}

static void release_slot(int s, uint8_t how);

static void op_alloc(struct reader *r)
{
	int s = get8(r) % NSLOTS;
	uint8_t how = get8(r);
	size_t n = get_size(r);
	uint8_t ab = get8(r), fh = get8(r);
	if (slots[s].kind != K_NONE)
		release_slot(s, fh);

	void *p = NULL;
	size_t align = 0, want = malloc_align_of(n), min_usable = n;
	bool zeroed = false;
	const char *fn;
	errno = 0;
	switch (how % 10) {
	case 0:
	default:
		fn = "sheaf_malloc";
		p = sheaf_malloc(n);
		break;
	case 1: {
		/* calloc(nmemb, size) with nmemb * size == n or close */
		size_t m = (size_t)(ab % 7) + 1;
		size_t each = n / m;
		fn = "sheaf_calloc";
		n = each * m;
		min_usable = n;
		want = malloc_align_of(n);
		p = sheaf_calloc(m, each);
		zeroed = true;
		break;
	}
	case 2:
		fn = "sheaf_aligned_alloc";
		align = (size_t)1 << (ab % 22);          /* 1 .. 2 MiB: all valid */
		want = align;
		p = sheaf_aligned_alloc(align, n);
		break;
	case 3: {
		fn = "sheaf_posix_memalign";
		align = (size_t)1 << (3 + ab % 19);       /* 8 .. 2 MiB */
		want = align;
		void *q = (void *)(uintptr_t)0x5eaf;
		int rc = sheaf_posix_memalign(&q, align, n);
		if (rc == 0) {
			p = q;
		} else {
			EXPECT(q == (void *)(uintptr_t)0x5eaf,
			       "posix_memalign failed with %d but changed *memptr", rc);
			errno = rc;
		}
		break;
	}
	case 4:
		fn = "sheaf_memalign";
		if (ab & 0x80) {
			/* not a power of two: rounded up to the next one */
			align = (size_t)(ab & 0x7f) + 1;
			want = 1;
			while (want < align)
				want <<= 1;
		} else {
			align = (size_t)1 << (ab % 22);
			want = align;
		}
		p = sheaf_memalign(align, n);
		break;
	case 5:
		fn = "sheaf_valloc";
		want = PAGE;
		p = sheaf_valloc(n);
		break;
	case 6:
		fn = "sheaf_pvalloc";
		want = PAGE;
		min_usable = n ? (n + PAGE - 1) / PAGE * PAGE : PAGE;
		p = sheaf_pvalloc(n);
		break;
	case 7:
		fn = "sheaf_realloc(NULL)";
		p = sheaf_realloc(NULL, n);
		break;
	case 8: {
		size_t m = (size_t)(ab % 5) + 1;
		fn = "sheaf_reallocarray(NULL)";
		n = n / m * m;
		min_usable = n;
		want = malloc_align_of(n);
		p = sheaf_reallocarray(NULL, m, n / m);
		break;
	}
	case 9:
		fn = "sheaf_calloc";
		p = sheaf_calloc(n, 1);
		zeroed = true;
		break;
	}
	if (!p) {
		alloc_failed(fn, n, errno);
		return;
	}
	add_block(s, p, n, align, want, min_usable, zeroed, fn);
}

/* Frees slot s (verified first), by one of the free functions. */
static void release_slot(int s, uint8_t how)
{
	struct block *b = &slots[s];
	TRACE("  free slot %d %p (how %u)\n", s, (void *)b->p, how);
	verify_slot(s, "before free");
	if (b->kind == K_CACHE) {
		struct cache *c = &caches[b->cache];
		if (c->ctor)
			memset(b->p, ctor_byte(b->cache), c->size);   /* back to constructed */
		sheaf_cache_free(c->c, b->p);
		c->live--;
		free_slot_raw(s);
		return;
	}
	switch (how % 4) {
	case 0:
		sheaf_free(b->p);
		break;
	case 1:
		sheaf_free_sized(b->p, b->req);
		break;
	case 2:
		sheaf_free_aligned_sized(b->p, b->align ? b->align : malloc_align_of(b->req), b->req);
		break;
	case 3: {
		errno = 0;
		void *q = sheaf_realloc(b->p, 0);
		/* glibc's convention: freed, NULL.  A fresh minimal block is
		 * allowed too (C17 leaves it to the implementation). */
		if (q)
			sheaf_free(q);
		break;
	}
	}
	free_slot_raw(s);
}

static void op_free(struct reader *r)
{
	int s = get8(r) % NSLOTS;
	uint8_t how = get8(r);
	if (slots[s].kind != K_NONE)
		release_slot(s, how);
}

static void op_realloc(struct reader *r)
{
	int s = get8(r) % NSLOTS;
	uint8_t how = get8(r);
	size_t n = get_size(r);
	struct block *b = &slots[s];

	if (b->kind == K_CACHE)
		return;   /* realloc of cache objects is not part of the API */
	if (b->kind == K_NONE) {
		errno = 0;
		void *p = sheaf_realloc(NULL, n);
		if (!p)
			alloc_failed("sheaf_realloc(NULL)", n, errno);
		else
			add_block(s, p, n, 0, malloc_align_of(n), n, false, "sheaf_realloc(NULL)");
		return;
	}
	verify_slot(s, "before realloc");
	if (n == 0) {
		release_slot(s, 3);
		return;
	}
	errno = 0;
	uint8_t *q;
	if (how & 1) {
		size_t m = (size_t)(how >> 1) % 4 + 1;
		n = n / m * m;
		if (!n)
			n = m;
		q = sheaf_reallocarray(b->p, m, n / m);
	} else {
		q = sheaf_realloc(b->p, n);
	}
	if (!q) {
		alloc_failed("sheaf_realloc", n, errno);
		verify_slot(s, "after a failed realloc");
		return;
	}
	size_t keep = b->req < n ? b->req : n;
	size_t bad = check_prefix(q, b->usable, keep, b->id);
	EXPECT(bad == SIZE_MAX, "realloc(%p, %zu -> %zu) = %p lost byte %zu", (void *)b->p, b->req,
	       n, (void *)q, bad);
	EXPECT(((uintptr_t)q & (malloc_align_of(n) - 1)) == 0, "realloc(.., %zu) = %p misaligned", n,
	       (void *)q);
	size_t u = sheaf_malloc_usable_size(q);
	EXPECT(u >= n, "realloc(.., %zu) = %p: usable %zu", n, (void *)q, u);
	check_no_overlap(q, u, s);
	TRACE("  slot %d realloc %p -> %p (%zu)\n", s, (void *)b->p, (void *)q, n);
	b->p = q;
	b->req = n;
	b->usable = u;
	b->align = 0;
	/* Same id: the pattern of the kept bytes does not change, the rest
	 * (and the sampling of the new size) is written. */
	fill_block(q, u, b->id);
}

static void op_usable(struct reader *r)
{
	int s = get8(r) % NSLOTS;
	if (slots[s].kind != K_NONE)
		verify_slot(s, "usable size");
	EXPECT(sheaf_malloc_usable_size(NULL) == 0, "sheaf_malloc_usable_size(NULL) != 0");
}

/* ----------------------------------------------------------- impossible */
static void op_impossible(struct reader *r)
{
	uint8_t v = get8(r), x = get8(r);
	void *p, *const sentinel = (void *)(uintptr_t)0x5eaf5eaf;
	const size_t top = (size_t)1 << (sizeof(size_t) * 8 - 1);
	int rc;

	errno = 0;
	switch (v % 14) {
	case 0:
		p = sheaf_malloc(SIZE_MAX - x);
		EXPECT(!p && errno == ENOMEM, "malloc(SIZE_MAX-%u) = %p, errno %d", x, p, errno);
		break;
	case 1:
		p = sheaf_malloc((size_t)PTRDIFF_MAX + 1 + (size_t)x * 4096);
		EXPECT(!p && errno == ENOMEM, "malloc(PTRDIFF_MAX+1+..) = %p, errno %d", p, errno);
		break;
	case 2:
		p = sheaf_calloc(SIZE_MAX / 2 + 1 + x, 3 + (x & 7));
		EXPECT(!p && errno == ENOMEM, "calloc overflow = %p, errno %d", p, errno);
		break;
	case 3:
		p = sheaf_calloc(1 + (x & 1), (size_t)PTRDIFF_MAX + 1 + x);
		EXPECT(!p && errno == ENOMEM, "calloc(.., > PTRDIFF_MAX) = %p, errno %d", p, errno);
		break;
	case 4: {
		int s = x % NSLOTS;
		if (slots[s].kind != K_MALLOC) {
			p = sheaf_realloc(NULL, SIZE_MAX - x);
			EXPECT(!p && errno == ENOMEM, "realloc(NULL, huge) = %p, errno %d", p, errno);
			break;
		}
		p = sheaf_realloc(slots[s].p, (size_t)PTRDIFF_MAX + 1 + x);
		EXPECT(!p && errno == ENOMEM, "realloc(p, huge) = %p, errno %d", p, errno);
		verify_slot(s, "after realloc(p, huge)");
		break;
	}
	case 5: {
		int s = x % NSLOTS;
		void *old = slots[s].kind == K_MALLOC ? slots[s].p : NULL;
		p = sheaf_reallocarray(old, (size_t)1 << 33, ((size_t)1 << 31) + x);
		EXPECT(!p && errno == ENOMEM, "reallocarray overflow = %p, errno %d", p, errno);
		if (old)
			verify_slot(s, "after reallocarray overflow");
		break;
	}
	case 6: {
		static const size_t bad[] = { 0, 3, 5, 6, 12, 24, 48, 100, 4097, 65535 };
		size_t a = bad[x % (sizeof(bad) / sizeof(bad[0]))];
		p = sheaf_aligned_alloc(a, 16);
		EXPECT(!p && errno == EINVAL, "aligned_alloc(%zu, 16) = %p, errno %d", a, p, errno);
		break;
	}
	case 7: {
		static const size_t bad[] = { 0, 1, 2, 4, 3, 12, 24, 100, 4097 };
		size_t a = bad[x % (sizeof(bad) / sizeof(bad[0]))];
		p = sentinel;
		rc = sheaf_posix_memalign(&p, a, 16);
		EXPECT(rc == EINVAL && p == sentinel, "posix_memalign(align %zu) = %d, %p", a, rc, p);
		break;
	}
	case 8:
		p = sentinel;
		rc = sheaf_posix_memalign(&p, (size_t)16 << (x % 8), SIZE_MAX - x);
		EXPECT(rc == ENOMEM && p == sentinel, "posix_memalign(.., huge) = %d, %p", rc, p);
		break;
	case 9:
		p = sheaf_memalign(SIZE_MAX / 2 + 2 + x, 16);
		EXPECT(!p && errno == EINVAL, "memalign(> SIZE_MAX/2+1) = %p, errno %d", p, errno);
		break;
	case 10:
		p = sheaf_aligned_alloc(top >> (x % 2), 16 + x);
		EXPECT(!p && errno == ENOMEM, "aligned_alloc(2^%d, ..) = %p, errno %d",
		       63 - (x % 2), p, errno);
		break;
	case 11:
		p = (x & 1) ? sheaf_valloc(SIZE_MAX - x) : sheaf_pvalloc(SIZE_MAX - x);
		EXPECT(!p && errno == ENOMEM, "%s(SIZE_MAX-%u) = %p, errno %d",
		       (x & 1) ? "valloc" : "pvalloc", x, p, errno);
		break;
	case 12: {
		/* sheaf_cache_create: zero size, too large, bad alignment, bad flags */
		static const struct {
			size_t size, align;
			unsigned int flags;
		} bad[] = { { 0, 0, 0 }, { (128u << 10) + 1, 0, 0 }, { 64, 3, 0 }, { 64, 8192, 0 },
			    { 64, 24, 0 }, { 64, 0, 0x100 }, { SIZE_MAX, 8, 0 } };
		unsigned int k = x % (sizeof(bad) / sizeof(bad[0]));
		struct sheaf_cache *c = sheaf_cache_create("bad", bad[k].size, bad[k].align,
							   bad[k].flags, NULL);
		EXPECT(!c && errno == EINVAL, "sheaf_cache_create(size %zu, align %zu, flags %#x) = "
		       "%p, errno %d", bad[k].size, bad[k].align, bad[k].flags, (void *)c, errno);
		break;
	}
	case 13:
		p = sheaf_memalign((size_t)64 << (x % 8), SIZE_MAX - 10 - x);
		EXPECT(!p && errno == ENOMEM, "memalign(.., huge) = %p, errno %d", p, errno);
		break;
	}
}

/* ---------------------------------------------------------------- caches */
static void op_cache_create(struct reader *r)
{
	unsigned int k = get8(r) % NCACHES;
	uint8_t sb = get8(r), ab = get8(r), fb = get8(r);
	struct cache *c = &caches[k];
	if (c->c)
		return;
	size_t size;
	switch (sb & 3) {
	case 0: size = (size_t)(sb >> 2) + 1; break;                 /* 1 .. 64 */
	case 1: size = ((size_t)(sb >> 2) + 1) * 24; break;          /* 24 .. 1536 */
	case 2: size = ((size_t)(sb >> 2) + 1) * 520; break;         /* .. 33 KiB */
	default: size = ((size_t)(sb >> 2) % 32 + 1) * 4096 - (sb & 4 ? 8 : 0); break; /* .. 128 KiB */
	}
	size_t align = (ab & 0x80) ? 0 : (size_t)1 << (ab % 13);   /* 0, 1 .. 4096 */
	unsigned int flags = fb & (SHEAF_HWCACHE_ALIGN | SHEAF_NO_SHEAVES);
	bool ctor = fb & 4;
	ctor_size[k] = size;
	char name[32];
	snprintf(name, sizeof(name), "fuzz-%u-%u", k, c->gen++);
	errno = 0;
	struct sheaf_cache *sc = sheaf_cache_create(name, size, align, flags, ctor ? ctors[k] : NULL);
	EXPECT(sc != NULL, "sheaf_cache_create(%zu, %zu, %#x) = NULL, errno %d", size, align, flags,
	       errno);
	EXPECT(sheaf_cache_object_size(sc) == size, "cache object size %zu, want %zu",
	       sheaf_cache_object_size(sc), size);
	EXPECT(strcmp(sheaf_cache_name(sc), name) == 0, "cache name %s, want %s",
	       sheaf_cache_name(sc), name);
	size_t eff = align < 8 ? 8 : align;
	if ((flags & SHEAF_HWCACHE_ALIGN) && eff < 64)
		eff = 64;
	c->c = sc;
	c->size = size;
	c->align = eff;
	c->flags = flags;
	c->ctor = ctor;
	c->live = 0;
	c->clob_lo = c->clob_hi = 0;
}

/* Records a cache object in slot s (empty). */
static void add_object(int s, unsigned int k, void *obj)
{
	struct cache *c = &caches[k];
	uint8_t *p = obj;
	EXPECT(((uintptr_t)p & (c->align - 1)) == 0, "cache %u (size %zu align %zu): object %p "
	       "misaligned", k, c->size, c->align, obj);
	size_t u = sheaf_malloc_usable_size(p);
	EXPECT(u == c->size, "cache %u object %p: usable size %zu, object size %zu", k, obj, u,
	       c->size);
	if (c->ctor) {
		size_t bad = first_not(p, c->size, ctor_byte(k), c->clob_lo, c->clob_hi);
		EXPECT(bad == SIZE_MAX, "cache %u object %p not in its constructed state at byte %zu",
		       k, obj, bad);
	}
	check_no_overlap(p, c->size, s);
	TRACE("  slot %d = cache %u object %p\n", s, k, obj);
	struct block *b = &slots[s];
	b->p = p;
	b->req = b->usable = c->size;
	b->align = c->align;
	b->id = next_id++;
	b->kind = K_CACHE;
	b->cache = (uint8_t)k;
	c->live++;
	fill_block(p, c->size, b->id);
}

static void op_cache_alloc(struct reader *r)
{
	unsigned int k = get8(r) % NCACHES;
	int s = get8(r) % NSLOTS;
	uint8_t how = get8(r);
	if (!caches[k].c)
		return;
	if (slots[s].kind != K_NONE)
		release_slot(s, how);
	errno = 0;
	void *obj = sheaf_cache_alloc(caches[k].c);
	if (!obj) {
		alloc_failed("sheaf_cache_alloc", caches[k].size, errno);
		return;
	}
	add_object(s, k, obj);
}

static void op_cache_alloc_bulk(struct reader *r)
{
	unsigned int k = get8(r) % NCACHES;
	size_t n = get8(r) % 48 + 1;
	int first = get8(r) % NSLOTS;
	if (!caches[k].c)
		return;
	/* Free slots from `first` on take the objects (n is cut to fit). */
	int idx[48];
	size_t m = 0;
	for (int i = 0; i < NSLOTS && m < n; i++) {
		int s = (first + i) % NSLOTS;
		if (slots[s].kind == K_NONE)
			idx[m++] = s;
	}
	if (!m)
		return;
	void *objs[48];
	errno = 0;
	size_t got = sheaf_cache_alloc_bulk(caches[k].c, m, objs);
	if (got == 0) {
		alloc_failed("sheaf_cache_alloc_bulk", m, errno);
		return;
	}
	EXPECT(got == m, "sheaf_cache_alloc_bulk(%zu) = %zu", m, got);
	for (size_t i = 0; i < m; i++)
		add_object(idx[i], k, objs[i]);
}

static void op_cache_free_bulk(struct reader *r)
{
	unsigned int k = get8(r) % NCACHES;
	size_t n = get8(r) % 48 + 1;
	int first = get8(r) % NSLOTS;
	if (!caches[k].c)
		return;
	void *objs[48];
	size_t m = 0;
	for (int i = 0; i < NSLOTS && m < n; i++) {
		int s = (first + i) % NSLOTS;
		if (slots[s].kind == K_CACHE && slots[s].cache == k) {
			verify_slot(s, "before free_bulk");
			if (caches[k].ctor)
				memset(slots[s].p, ctor_byte(k), caches[k].size);
			objs[m++] = slots[s].p;
			free_slot_raw(s);
		}
	}
	sheaf_cache_free_bulk(caches[k].c, m, objs);
	caches[k].live -= (unsigned int)m;
}

static void op_cache_destroy(struct reader *r)
{
	unsigned int k = get8(r) % NCACHES;
	struct cache *c = &caches[k];
	if (!c->c)
		return;
	if (c->live) {
		/* Only with few objects; its report (a line per slab) goes to
		 * /dev/null meanwhile. */
		if (c->live > 2)
			return;
		go_offline();   /* destroy waits for a grace period first */
		fflush(stderr);
		int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
		if (saved >= 0 && devnull >= 0)
			dup2(devnull, 2);
		errno = 0;
		int rc = sheaf_cache_destroy(c->c);
		int err = errno;
		if (saved >= 0 && devnull >= 0)
			dup2(saved, 2);
		if (saved >= 0)
			close(saved);
		if (devnull >= 0)
			close(devnull);
		errno = err;
		EXPECT(rc == -1 && errno == EBUSY, "sheaf_cache_destroy() with %u live objects = %d, "
		       "errno %d", c->live, rc, errno);
		verify_all("after a refused destroy");
		go_online();
		return;
	}
	/* Pending rcu_free()'d objects of the cache are waited for: a grace
	 * period must be able to end. */
	go_offline();
	errno = 0;
	int rc = sheaf_cache_destroy(c->c);
	EXPECT(rc == 0, "sheaf_cache_destroy() of an unused cache = %d, errno %d", rc, errno);
	c->c = NULL;
	go_online();
}

/* ------------------------------------------------------------------ rcu */
static void note_clobber(struct cache *c, size_t field, size_t len)
{
	if (c->clob_lo == c->clob_hi) {
		c->clob_lo = field;
		c->clob_hi = field + len;
		return;
	}
	if (field < c->clob_lo)
		c->clob_lo = field;
	if (field + len > c->clob_hi)
		c->clob_hi = field + len;
}

struct rp0 { struct rcu_ptr rp; };
struct rp8 { uint64_t a; struct rcu_ptr rp; };
struct rh16 { uint64_t a, b; struct rcu_head rh; };

static void op_rcu_free(struct reader *r)
{
	int s = get8(r) % NSLOTS;
	uint8_t how = get8(r), ob = get8(r);
	struct block *b = &slots[s];
	if (b->kind == K_NONE || b->usable < SHEAF_RCU_PTR_SIZE)
		return;
	if ((how % 5 == 1 && b->usable < sizeof(struct rp8)) ||
	    (how % 5 == 2 && b->usable < sizeof(struct rh16)))
		return;
	verify_slot(s, "before rcu_free");
	bool ctor = b->kind == K_CACHE && caches[b->cache].ctor;
	if (ctor)
		memset(b->p, ctor_byte(b->cache), b->usable);   /* constructed state */
	size_t field = 0, len = SHEAF_RCU_PTR_SIZE;
	bool waited = false;
	switch (how % 5) {
	case 0:
		rcu_free((struct rp0 *)(void *)b->p, rp);
		field = offsetof(struct rp0, rp);
		break;
	case 1:
		rcu_free((struct rp8 *)(void *)b->p, rp);
		field = offsetof(struct rp8, rp);
		break;
	case 2:
		rcu_free((struct rh16 *)(void *)b->p, rh);
		field = offsetof(struct rh16, rh);
		len = sizeof(struct rcu_head);
		break;
	case 3: {
		/* Any 8-aligned offset that keeps the field inside the block. */
		size_t slots8 = (b->usable - len) / 8 + 1;
		field = (size_t)(ob * 0x101u % slots8) * 8;
		if (b->usable > DENSE_MAX && (ob & 1))
			field = (b->usable - len) & ~(size_t)7;   /* far into a large block */
		sheaf_rcu_free_field(b->p, b->p + field, "rcu_free()");
		break;
	}
	case 4:
		rcu_free_mightsleep(b->p);
		len = 0;
		/* It may wait for a grace period (rcu.h): a quiescent
		 * state, after which b->p is freed already. */
		waited = tiny_build || faults_armed;
		break;
	}
	rcu_used = true;
	TRACE("  rcu_free slot %d %p (how %u, field %zu)\n", s, (void *)b->p, how, field);
	if (b->kind == K_CACHE) {
		caches[b->cache].live--;
		if (len)
			note_clobber(&caches[b->cache], field, len);
	}
	if (waited) {
		forget_pending();
	} else if (online && npend < NPENDING) {
		struct pending *q = &pend[npend++];
		q->p = b->p;
		q->usable = b->usable;
		q->field = field;
		q->field_len = len;
		q->id = b->id;
		q->ctor = ctor;
		q->cache = b->cache;
	}
	free_slot_raw(s);
}

static void op_rcu_sync(struct reader *r)
{
	uint8_t how = get8(r);
	switch (how % 8) {
	default:
		/* A quiescent state: grace periods may end from here on. */
		forget_pending();
		if (!in_thread)
			rcu_quiescent_state();
		break;
	case 6: {
		verify_pending();
		go_offline();
		int rc = rcu_free_barrier();
		EXPECT(rc == 0, "rcu_free_barrier() = %d, errno %d", rc, errno);
		go_online();
		break;
	}
	case 7: {
		unsigned int k = get8(r) % NCACHES;
		if (!caches[k].c)
			break;
		go_offline();
		int rc = sheaf_cache_rcu_barrier(caches[k].c);
		EXPECT(rc == 0, "sheaf_cache_rcu_barrier() = %d, errno %d", rc, errno);
		go_online();
		break;
	}
	}
}

/* ------------------------------------------------------------- the rest */
/*
 * The signal-safe entry points, called from ordinary code (a signal handler
 * may call them; so may anyone): sheaf_malloc_nolock() may fail (NULL +
 * EAGAIN) but otherwise gives a block like malloc; sheaf_free_nolock() may
 * defer the free (the block is gone for the model either way; the final
 * accounting shows whether the deferred free happened); rcu_free_nolock()
 * is rcu_free() (it may link through the field).
 */
static void op_nolock(struct reader *r)
{
	uint8_t how = get8(r);
	int s = get8(r) % NSLOTS;
	size_t n = get_size(r);
	struct block *b = &slots[s];
	switch (how % 3) {
	case 0: {
		if (b->kind != K_NONE || n > SMALL_MAX)
			return;
		errno = 0;
		void *p = sheaf_malloc_nolock(n);
		if (!p) {
			EXPECT(errno == EAGAIN || (faults_armed && errno == ENOMEM),
			       "sheaf_malloc_nolock(%zu) = NULL with errno %d, not EAGAIN", n, errno);
			return;
		}
		add_block(s, p, n, 0, malloc_align_of(n), n, false, "sheaf_malloc_nolock");
		return;
	}
	case 1:
		if (b->kind == K_NONE)
			return;
		verify_slot(s, "before sheaf_free_nolock");
		if (b->kind == K_CACHE) {
			struct cache *c = &caches[b->cache];
			if (c->ctor)
				memset(b->p, ctor_byte(b->cache), c->size);
			c->live--;
		}
		TRACE("  free_nolock slot %d %p\n", s, (void *)b->p);
		sheaf_free_nolock(b->p);
		free_slot_raw(s);
		return;
	default: {
		if (b->kind == K_NONE || b->usable < sizeof(struct rp8))
			return;
		verify_slot(s, "before rcu_free_nolock");
		bool ctor = b->kind == K_CACHE && caches[b->cache].ctor;
		if (ctor)
			memset(b->p, ctor_byte(b->cache), b->usable);
		size_t field;
		if (n & 1) {
			rcu_free_nolock((struct rp8 *)(void *)b->p, rp);
			field = offsetof(struct rp8, rp);
		} else {
			rcu_free_nolock((struct rp0 *)(void *)b->p, rp);
			field = offsetof(struct rp0, rp);
		}
		TRACE("  rcu_free_nolock slot %d %p (field %zu)\n", s, (void *)b->p, field);
		rcu_used = true;
		if (b->kind == K_CACHE) {
			caches[b->cache].live--;
			note_clobber(&caches[b->cache], field, SHEAF_RCU_PTR_SIZE);
		}
		if (online && npend < NPENDING) {
			struct pending *q = &pend[npend++];
			q->p = b->p;
			q->usable = b->usable;
			q->field = field;
			q->field_len = SHEAF_RCU_PTR_SIZE;
			q->id = b->id;
			q->ctor = ctor;
			q->cache = b->cache;
		}
		free_slot_raw(s);
		return;
	}
	}
}

static void op_trim(struct reader *r)
{
	(void)r;
	int rc = sheaf_malloc_trim(0);
	EXPECT(rc == 0 || rc == 1, "malloc_trim(0) = %d", rc);
	verify_all("after malloc_trim");
}

static void op_fault(struct reader *r)
{
	uint8_t n = get8(r);
	page_fail_next(n % 4);
	faults_armed = true;
}

static void run_ops(struct reader *r, unsigned long max_ops);

struct xthread {
	struct reader r;
	unsigned long ops;
};

static void *xthread_main(void *arg)
{
	struct xthread *x = arg;
	in_thread = true;
	run_ops(&x->r, x->ops);
	in_thread = false;
	return NULL;
}

/*
 * The next few operations run in a new thread, which then exits: blocks
 * cross threads both ways, and the exiting thread's sheaves (and pending
 * rcu_free()s) must be handed back.  This thread goes offline meanwhile: the
 * other thread may need grace periods to end (barriers, destroy).
 */
static void op_xthread(struct reader *r)
{
	if (in_thread)
		return;
	unsigned long ops = (unsigned long)get8(r) % 24 + 1;
	struct xthread x = { *r, ops };
	go_offline();
	pthread_t t;
	if (pthread_create(&t, NULL, xthread_main, &x) != 0) {
		go_online();
		return;
	}
	pthread_join(t, NULL);
	r->i = x.r.i;
	go_online();
}

enum {
	OP_ALLOC, OP_FREE, OP_REALLOC, OP_USABLE, OP_CACHE_CREATE, OP_CACHE_ALLOC,
	OP_CACHE_FREE, OP_CACHE_ALLOC_BULK, OP_CACHE_FREE_BULK, OP_CACHE_DESTROY,
	OP_RCU_FREE, OP_RCU_SYNC, OP_TRIM, OP_IMPOSSIBLE, OP_FAULT, OP_XTHREAD,
	OP_VERIFY, OP_NOLOCK, NR_OPS
};

/*
 * Operation byte b runs op_of[b % 32]: allocation and free dominate, the
 * expensive operations are rare.  The argument bytes that follow (SIZE is
 * two bytes, see get_size(); the seed corpus generator gen-corpus.sh writes
 * programs in this form, with the first index of each operation):
 *    0 alloc        slot, fn (%10: malloc calloc(m,n/m) aligned_alloc
 *                   posix_memalign memalign valloc pvalloc realloc(NULL)
 *                   reallocarray(NULL) calloc(n,1)), SIZE, align byte,
 *                   free fn for the slot's old block (as below)
 *    6 free         slot, fn (%4: free free_sized free_aligned_sized realloc(p,0))
 *   10 realloc      slot, fn (odd: reallocarray), SIZE
 *   13 cache alloc  cache, slot, free fn
 *   16 cache free   slot
 *   18 rcu_free     slot, fn (%5: field at 0, at 8, rcu_head at 16, any
 *                   offset (next byte), rcu_free_mightsleep), offset byte
 *   20 usable size  slot
 *   21 cache create cache, size byte, align byte, flags byte (1 hwcache,
 *                   2 no sheaves, 4 constructor)
 *   22 alloc_bulk   cache, n, first slot
 *   23 free_bulk    cache, n, first slot
 *   24 destroy      cache
 *   25 rcu sync     fn (%8: 6 rcu_free_barrier, 7 sheaf_cache_rcu_barrier
 *                   + cache byte, else a quiescent state)
 *   26 trim
 *   27 impossible   which (%14), byte
 *   28 fault        n (%4 mmaps fail)
 *   29 thread       n: the next n%24+1 operations run in a new thread
 *   30 verify
 *   31 nolock       fn (%3: sheaf_malloc_nolock, sheaf_free_nolock,
 *                   rcu_free_nolock with the field at 0 or 8), slot, SIZE
 */
static const uint8_t op_of[32] = {
	OP_ALLOC, OP_ALLOC, OP_ALLOC, OP_ALLOC, OP_ALLOC, OP_ALLOC,          /*  0 */
	OP_FREE, OP_FREE, OP_FREE, OP_FREE,                                   /*  6 */
	OP_REALLOC, OP_REALLOC, OP_REALLOC,                                   /* 10 */
	OP_CACHE_ALLOC, OP_CACHE_ALLOC, OP_CACHE_ALLOC,                       /* 13 */
	OP_CACHE_FREE, OP_CACHE_FREE,                                         /* 16 */
	OP_RCU_FREE, OP_RCU_FREE,                                             /* 18 */
	OP_USABLE, OP_CACHE_CREATE, OP_CACHE_ALLOC_BULK, OP_CACHE_FREE_BULK,  /* 20 */
	OP_CACHE_DESTROY, OP_RCU_SYNC, OP_TRIM, OP_IMPOSSIBLE,                /* 24 */
	OP_FAULT, OP_XTHREAD, OP_VERIFY, OP_NOLOCK,                           /* 28 */
};

static void run_ops(struct reader *r, unsigned long max_ops)
{
	for (unsigned long done = 0; r->i < r->n && done < max_ops; done++) {
		op_index++;
		uint8_t op = op_of[get8(r) % 32];
		TRACE("op %lu: %u%s\n", op_index, op, in_thread ? " (thread)" : "");
		switch (op) {
		case OP_ALLOC: op_alloc(r); break;
		case OP_FREE: op_free(r); break;
		case OP_REALLOC: op_realloc(r); break;
		case OP_USABLE: op_usable(r); break;
		case OP_CACHE_CREATE: op_cache_create(r); break;
		case OP_CACHE_ALLOC: op_cache_alloc(r); break;
		case OP_CACHE_FREE: {
			int s = get8(r) % NSLOTS;
			if (slots[s].kind == K_CACHE)
				release_slot(s, 0);
			break;
		}
		case OP_CACHE_ALLOC_BULK: op_cache_alloc_bulk(r); break;
		case OP_CACHE_FREE_BULK: op_cache_free_bulk(r); break;
		case OP_CACHE_DESTROY: op_cache_destroy(r); break;
		case OP_RCU_FREE: op_rcu_free(r); break;
		case OP_RCU_SYNC: op_rcu_sync(r); break;
		case OP_TRIM: op_trim(r); break;
		case OP_IMPOSSIBLE: op_impossible(r); break;
		case OP_FAULT: op_fault(r); break;
		case OP_XTHREAD: op_xthread(r); break;
		case OP_VERIFY: verify_all("verify"); break;
		case OP_NOLOCK: op_nolock(r); break;
		}
		if (trace >= 2)
			verify_all("after the operation (SHEAF_FUZZ_TRACE=2)");
	}
}

static int64_t live_count(void)
{
	struct sheaf_stats st;
	sheaf_stats_get(&st);
	return (int64_t)(st.allocs - st.frees);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool inited;
	if (!inited) {
		const char *t = getenv("SHEAF_FUZZ_TRACE");
		trace = t ? atoi(t) : 0;
		tiny_build = (sheaf_build_flags() & SHEAF_BUILD_TINY) != 0;
		rcu_register_thread();
		rcu_thread_offline();
		inited = true;
	}
	/* Everything is freed at the end of each input, after a barrier. */
	int64_t live0 = live_count();

	struct reader r = { data, size, 0 };
	op_index = 0;
	npend = 0;
	faults_armed = false;
	rcu_used = false;
	go_online();
	run_ops(&r, ~0ul);

	/* Tear down: verify and free everything, let rcu_free()s finish. */
	op_index++;
	page_fail_next(0);
	verify_all("at the end");
	for (int s = 0; s < NSLOTS; s++)
		if (slots[s].kind != K_NONE)
			release_slot(s, (uint8_t)s);
	go_offline();
	if (rcu_used)
		EXPECT(rcu_free_barrier() == 0, "final rcu_free_barrier() failed, errno %d", errno);
	for (unsigned int k = 0; k < NCACHES; k++) {
		if (!caches[k].c)
			continue;
		EXPECT(caches[k].live == 0, "model: cache %u still has %u objects", k, caches[k].live);
		int rc = sheaf_cache_destroy(caches[k].c);
		EXPECT(rc == 0, "final sheaf_cache_destroy() = %d, errno %d", rc, errno);
		caches[k].c = NULL;
	}
	/* sheaf_free_nolock() may have deferred a free to the next slow path
	 * (nolock.c): malloc_trim is one. */
	sheaf_malloc_trim(0);
	int64_t live1 = live_count();
	EXPECT(live1 == live0, "allocs - frees went from %lld to %lld over the input",
	       (long long)live0, (long long)live1);
	return 0;
}
