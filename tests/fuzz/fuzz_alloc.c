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
 * sheaf_cache_rcu_barrier(), impossible requests, injected mmap failures
 * (page_fail_next) and short-lived threads that run part of the program.
 *
 * The model (up to NSLOTS live blocks) checks after every operation what
 * the API promises:
 *   - contents: every block is filled, up to its usable size, with a
 *     pattern derived from its id, and verified before it is freed or
 *     reallocated, after malloc_trim and at the end; realloc keeps the
 *     bytes both sizes have; calloc memory is zero; an object of a cache
 *     with a constructor comes out of the cache in its constructed state;
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

static inline uint8_t pat(uint32_t id, size_t i)
{
	return (uint8_t)((i * 0x9du) ^ (i >> 8) ^ (id * 0x5bu) ^ (id >> 8));
}

/*
 * Which bytes of a block are filled and checked: all of them up to 64 KiB;
 * beyond, the first and last 4 KiB and one 64-byte line per page (a large
 * block may be megabytes, and the fuzzer should stay fast).
 */
#define DENSE_MAX 65536u

static void fill_range(uint8_t *p, size_t from, size_t to, uint32_t id)
{
	for (size_t i = from; i < to; i++)
		p[i] = pat(id, i);
}

static void for_sampled(size_t n, void (*fn)(size_t from, size_t to, void *arg), void *arg)
{
	if (n <= DENSE_MAX) {
		fn(0, n, arg);
		return;
	}
	fn(0, PAGE, arg);
	for (size_t off = PAGE; off + PAGE < n; off += PAGE)
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

static void fill_cb(size_t from, size_t to, void *arg)
{
	struct fill_arg *a = arg;
	fill_range(a->p, from, to, a->id);
}

static void check_cb(size_t from, size_t to, void *arg)
{
	struct fill_arg *a = arg;
	if (a->bad != SIZE_MAX)
		return;
	if (to > a->limit)
		to = a->limit;
	for (size_t i = from; i < to; i++) {
		if (i >= a->skip_lo && i < a->skip_hi)
			continue;
		if (a->p[i] != pat(a->id, i)) {
			a->bad = i;
			return;
		}
	}
}

static void fill_block(uint8_t *p, size_t n, uint32_t id)
{
	struct fill_arg a = { p, id, 0, 0, SIZE_MAX, SIZE_MAX };
	for_sampled(n, fill_cb, &a);
}

/* SIZE_MAX if the block holds its pattern, else the first bad offset. */
static size_t check_block(const uint8_t *p, size_t n, uint32_t id, size_t skip_lo, size_t skip_hi)
{
	struct fill_arg a = { (uint8_t *)p, id, skip_lo, skip_hi, SIZE_MAX, SIZE_MAX };
	for_sampled(n, check_cb, &a);
	return a.bad;
}

/* The same for the first `keep` bytes of a block that was filled as one of
 * `filled` bytes (realloc: what both sizes have). */
static size_t check_prefix(const uint8_t *p, size_t filled, size_t keep, uint32_t id)
{
	struct fill_arg a = { (uint8_t *)p, id, 0, 0, keep, SIZE_MAX };
	for_sampled(filled, check_cb, &a);
	return a.bad;
}

static size_t first_not(const uint8_t *p, size_t n, uint8_t v, size_t skip_lo, size_t skip_hi)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v && (i < skip_lo || i >= skip_hi))
			return i;
	return SIZE_MAX;
}

static bool ranges_overlap(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	if (!na)
		na = 1;
	if (!nb)
		nb = 1;
	return a < b + nb && b < a + na;
}

/* A new block must not overlap any live block or any pending rcu block. */
static void check_no_overlap(const uint8_t *p, size_t n, int self)
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
	EXPECT(bad == SIZE_MAX, "%s: block %p (slot %d, %zu usable, asked %zu) byte %zu changed",
	       when, (void *)b->p, s, b->usable, b->req, bad);
	EXPECT(sheaf_malloc_usable_size(b->p) == b->usable,
	       "%s: usable size of %p changed from %zu to %zu", when, (void *)b->p, b->usable,
	       sheaf_malloc_usable_size(b->p));
}

static void verify_pending(void)
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

static void verify_all(const char *when)
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
	uint8_t ab = get8(r);
	if (slots[s].kind != K_NONE)
		release_slot(s, get8(r));

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
		size_t bad = first_not(p, c->size, ctor_byte(k), 0, 0);
		EXPECT(bad == SIZE_MAX, "cache %u object %p not in its constructed state at byte %zu",
		       k, obj, bad);
	}
	check_no_overlap(p, c->size, s);
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
	verify_slot(s, "before rcu_free");
	bool ctor = b->kind == K_CACHE && caches[b->cache].ctor;
	if (ctor)
		memset(b->p, ctor_byte(b->cache), b->usable);   /* constructed state */
	size_t field = 0, len = SHEAF_RCU_PTR_SIZE;
	switch (how % 5) {
	case 0:
		rcu_free((struct rp0 *)(void *)b->p, rp);
		field = offsetof(struct rp0, rp);
		break;
	case 1:
		if (b->usable < sizeof(struct rp8))
			return;
		rcu_free((struct rp8 *)(void *)b->p, rp);
		field = offsetof(struct rp8, rp);
		break;
	case 2:
		if (b->usable < sizeof(struct rh16))
			return;
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
		break;
	}
	rcu_used = true;
	if (b->kind == K_CACHE)
		caches[b->cache].live--;
	if (online && npend < NPENDING) {
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
	OP_VERIFY, NR_OPS
};

/* Weights: allocation and free dominate; the expensive ones are rare. */
static const uint8_t op_weight[NR_OPS] = {
	[OP_ALLOC] = 60, [OP_FREE] = 40, [OP_REALLOC] = 25, [OP_USABLE] = 6,
	[OP_CACHE_CREATE] = 8, [OP_CACHE_ALLOC] = 30, [OP_CACHE_FREE] = 20,
	[OP_CACHE_ALLOC_BULK] = 6, [OP_CACHE_FREE_BULK] = 6, [OP_CACHE_DESTROY] = 5,
	[OP_RCU_FREE] = 20, [OP_RCU_SYNC] = 4, [OP_TRIM] = 2, [OP_IMPOSSIBLE] = 8,
	[OP_FAULT] = 3, [OP_XTHREAD] = 2, [OP_VERIFY] = 1,
};
static uint8_t op_table[256];

static void build_op_table(void)
{
	unsigned int total = 0, at = 0;
	for (int i = 0; i < NR_OPS; i++)
		total += op_weight[i];
	for (int i = 0; i < NR_OPS; i++) {
		unsigned int n = (op_weight[i] * 256u + total / 2) / total;
		for (unsigned int j = 0; j < n && at < 256; j++)
			op_table[at++] = (uint8_t)i;
	}
	while (at < 256)
		op_table[at++] = OP_ALLOC;
}

static void run_ops(struct reader *r, unsigned long max_ops)
{
	for (unsigned long done = 0; r->i < r->n && done < max_ops; done++) {
		op_index++;
		switch (op_table[get8(r)]) {
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
		}
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
		build_op_table();
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
	int64_t live1 = live_count();
	EXPECT(live1 == live0, "allocs - frees went from %lld to %lld over the input",
	       (long long)live0, (long long)live1);
	sheaf_malloc_trim(0);
	return 0;
}
