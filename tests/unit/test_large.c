/*
 * test_large.c - allocations above the largest size class.
 *
 * What it proves:
 *   - large_alloc() from 32 KiB + 1 to 64 MiB returns page-aligned,
 *     writable, zeroed memory of at least the size asked for (whole pages),
 *     with every page of the mapping entered in the page map as the
 *     allocation's descriptor tagged PM_TAG_LARGE (and the pages around it
 *     not); do_usable_size() agrees; large_stats() counts it exactly;
 *   - alignments from 8 KiB to 2 MiB are honoured, with the same page map
 *     guarantees;
 *   - a freed mapping within large_cache_max is kept and comes back, at the
 *     same address, for the next allocation of the same size (zeroed when
 *     asked), even while mmap fails; one above large_cache_max is unmapped
 *     and its page map entries cleared at once;
 *   - the cache never holds more than large_cache bytes: the oldest entries
 *     are unmapped (and leave the page map) first;
 *   - large_realloc() grows with content preserved and the page map moved
 *     along (the old range no longer maps to the block when it moved),
 *     shrinks in place keeping content with the page map following the
 *     mapping, and keeps the size when nothing changes;
 *   - realloc() shrinking a block by half or more leaves it in place and
 *     turns the cut pages into a cached mapping, which the next large
 *     malloc of about that size gets; a block of up to 1 MiB growing past
 *     its mapping moves into the thread's freed block (contents kept), and
 *     with nothing at hand grows by mremap; a cached mapping far bigger
 *     than a growing block (over 8x and 1 MiB) is not taken; realloc(p, 0)
 *     of a zero-sized large block frees it;
 *   - large_trim() empties the cache, clearing its page map entries, and
 *     says whether there was anything;
 *   - page_fail_next(1) makes the next large_alloc() fail with NULL /
 *     ENOMEM and nothing accounted, and the one after succeed; impossible
 *     sizes fail with ENOMEM;
 *   - a double free and an interior pointer of a large block given to the
 *     free path are diagnosed (abort_on_error off) and change nothing.
 *   - the thread's large slot: a freed block up to large_thread bytes comes
 *     back for the thread's next malloc it fits (at most twice as big),
 *     zeroed for calloc; it counts as cached, not live; a second free of it
 *     is a double free; a newer block pushes it into the shared cache;
 *     large_trim() and thread exit give it back; large_thread = 0 turns it
 *     off.
 */
#include "fastpath.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "../check.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

static size_t round_page(size_t n)
{
	return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
}

/* free()'s slow path, as free_fast() calls it. */
static void free_slow(void *p)
{
	do_free_slow(p, pagemap_lookup((uintptr_t)p), "test");
}

static struct large *large_of(const void *p)
{
	uintptr_t e = pagemap_lookup((uintptr_t)p);
	return (e & PM_TAG_LARGE) ? (struct large *)(e & ~PM_TAG_LARGE) : NULL;
}

/* Every page of [p, p + bytes) maps to `l`, tagged. */
static bool range_maps_to(const void *p, size_t bytes, const struct large *l)
{
	uintptr_t want = (uintptr_t)l | PM_TAG_LARGE;
	for (size_t off = 0; off < bytes; off += PAGE_SIZE)
		if (pagemap_lookup((uintptr_t)p + off) != want)
			return false;
	return pagemap_lookup((uintptr_t)p + bytes - 1) == want;
}

/* No page of [p, p + bytes) maps to `l`. */
static bool range_free_of(const void *p, size_t bytes, const struct large *l)
{
	uintptr_t bad = (uintptr_t)l | PM_TAG_LARGE;
	for (size_t off = 0; off < bytes; off += PAGE_SIZE)
		if (pagemap_lookup((uintptr_t)p + off) == bad)
			return false;
	return true;
}

static bool range_zero(const void *p, size_t bytes)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < bytes; i += 509)
		if (b[i])
			return false;
	return b[bytes - 1] == 0;
}

struct lstats {
	size_t live, live_bytes, cached;
	uint64_t allocs, frees;
};

static struct lstats lstats(void)
{
	struct lstats s;
	large_stats(&s.live, &s.live_bytes, &s.cached, &s.allocs, &s.frees);
	return s;
}

/* A live block `p` of at least `size` bytes, checked in full. */
static bool check_block(void *p, size_t size, size_t align, const char *what)
{
	struct large *l = large_of(p);
	bool ok = true;
	CHECKF(p != NULL && (uintptr_t)p % align == 0, "%s: %p not aligned to %zu", what, p, align);
	CHECKF(l != NULL, "%s: %p not in the page map as large", what, p);
	if (!p || !l)
		return false;
	ok &= l->state == LARGE_LIVE && l->user == (uintptr_t)p;
	ok &= large_usable(l) >= size && l->map_bytes % PAGE_SIZE == 0;
	ok &= do_usable_size(p) == large_usable(l);
	CHECKF(ok, "%s: descriptor of %p: state %#x user %#lx usable %zu", what, p, l->state,
	       (unsigned long)l->user, large_usable(l));
	bool mapped = range_maps_to((void *)l->base, l->map_bytes, l);
	CHECKF(mapped, "%s: a page of %p is missing from the page map", what, p);
	CHECKF(pagemap_lookup(l->base - 1) != ((uintptr_t)l | PM_TAG_LARGE) &&
	       pagemap_lookup(l->base + l->map_bytes) != ((uintptr_t)l | PM_TAG_LARGE),
	       "%s: a page next to %p maps to it", what, p);
	return ok && mapped;
}

static void test_sizes(void)
{
	static const size_t sizes[] = {
		SMALL_MAX + 1, 40000, 64 * KIB, 100000, MIB + 1, 4 * MIB, 5 * MIB + 17, 16 * MIB,
		64 * MIB,
	};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	void *p[N];
	struct lstats s0 = lstats();
	size_t bytes = 0;
	for (int i = 0; i < N; i++) {
		char what[64];
		snprintf(what, sizeof(what), "large_alloc(%zu)", sizes[i]);
		p[i] = large_alloc(sizes[i], PAGE_SIZE, false);
		REQUIRE(p[i] != NULL);
		check_block(p[i], sizes[i], PAGE_SIZE, what);
		CHECKF(large_of(p[i])->map_bytes == round_page(sizes[i]), "%s: %zu bytes mapped", what,
		       large_of(p[i])->map_bytes);
		CHECKF(range_zero(p[i], sizes[i]), "%s: not zeroed", what);
		((char *)p[i])[0] = 1;
		((char *)p[i])[sizes[i] - 1] = 2;
		bytes += large_of(p[i])->map_bytes;
	}
	struct lstats s1 = lstats();
	CHECK(s1.live - s0.live == N && s1.live_bytes - s0.live_bytes == bytes);
	CHECK(s1.allocs - s0.allocs == N);
	for (int i = 0; i < N; i++) {
		struct large *l = large_of(p[i]);
		size_t mb = l->map_bytes;
		bool cached = mb <= sheaf_opt.large_cache_max && mb <= sheaf_opt.large_cache;
		large_free(l);
		if (!cached)
			CHECKF(range_free_of(p[i], mb, l), "size %zu: page map kept after unmapping",
			       sizes[i]);
	}
	struct lstats s2 = lstats();
	CHECK(s2.live == s0.live && s2.live_bytes == s0.live_bytes && s2.frees - s1.frees == N);
	CHECK(s2.cached <= sheaf_opt.large_cache);
	CHECK(large_trim() == (s2.cached > 0));
}

static void test_alignment(void)
{
	for (size_t align = 8 * KIB; align <= 2 * MIB; align *= 2) {
		static const size_t sizes[] = { 40000, MIB, 3 * MIB + 5 };
		for (size_t k = 0; k < 3; k++) {
			char what[64];
			snprintf(what, sizeof(what), "large_alloc(%zu, align %zu)", sizes[k], align);
			void *p = large_alloc(sizes[k], align, false);
			REQUIRE(p != NULL);
			check_block(p, sizes[k], align, what);
			memset(p, 0x33, 64);
			((char *)p)[sizes[k] - 1] = 3;
			large_free(large_of(p));
		}
	}
	large_trim();
}

static void test_cache_reuse(void)
{
	large_trim();
	CHECK(lstats().cached == 0);
	size_t max = sheaf_opt.large_cache_max;
	REQUIRE(max >= MIB && sheaf_opt.large_cache >= max);

	/* Same size, same address; the contents zeroed when asked. */
	void *p = large_alloc(MIB, PAGE_SIZE, false);
	REQUIRE(p != NULL);
	memset(p, 0xab, MIB);
	struct large *l = large_of(p);
	large_free(l);
	struct lstats s = lstats();
	CHECKF(s.cached == MIB, "cached %zu after freeing 1 MiB", s.cached);
	CHECK(l->state == LARGE_CACHED);
	CHECK(range_maps_to(p, MIB, l));   /* still ours: a second free is caught */
	void *q = large_alloc(MIB, PAGE_SIZE, true);
	CHECKF(q == p, "1 MiB again: %p, freed %p", q, p);
	CHECK(check_block(q, MIB, PAGE_SIZE, "reused"));
	CHECKF(range_zero(q, MIB), "reused block with zero=true holds old data");
	CHECK(lstats().cached == 0);

	/* Served from the cache while mmap fails. */
	large_free(large_of(q));
	page_fail_next(1);
	void *r = large_alloc(MIB, PAGE_SIZE, false);
	CHECKF(r == p, "cached block not reused while mmap fails: %p", r);
	page_fail_next(0);
	if (r)
		large_free(large_of(r));

	/* Above large_cache_max: unmapped at once. */
	void *big = large_alloc(max + PAGE_SIZE, PAGE_SIZE, false);
	REQUIRE(big != NULL);
	struct large *bl = large_of(big);
	size_t before = lstats().cached;
	large_free(bl);
	CHECK(lstats().cached == before);
	CHECK(range_free_of(big, max + PAGE_SIZE, bl));

	/* The bound: with room for 4 blocks, freeing 7 keeps the last 4. */
	large_trim();
	size_t saved = sheaf_opt.large_cache;
	size_t blk = max < 2 * MIB ? max : 2 * MIB;
	sheaf_opt.large_cache = 4 * blk;
	enum { M = 7 };
	void *b[M];
	struct large *bd[M];
	for (int i = 0; i < M; i++) {
		b[i] = large_alloc(blk, PAGE_SIZE, false);
		REQUIRE(b[i] != NULL);
		bd[i] = large_of(b[i]);
	}
	for (int i = 0; i < M; i++) {
		large_free(bd[i]);
		struct lstats st = lstats();
		CHECKF(st.cached <= sheaf_opt.large_cache, "cached %zu > large_cache %zu", st.cached,
		       sheaf_opt.large_cache);
	}
	CHECK(lstats().cached == 4 * blk);
	for (int i = 0; i < M - 4; i++)
		CHECKF(range_free_of(b[i], blk, bd[i]), "evicted block %d still in the page map", i);
	for (int i = M - 4; i < M; i++)
		CHECKF(range_maps_to(b[i], blk, bd[i]) && bd[i]->state == LARGE_CACHED,
		       "cached block %d left the page map", i);

	/* large_trim() empties it. */
	CHECK(large_trim());
	CHECK(lstats().cached == 0);
	for (int i = M - 4; i < M; i++)
		CHECK(range_free_of(b[i], blk, bd[i]));
	CHECK(!large_trim());
	sheaf_opt.large_cache = saved;
}

static void fill(unsigned char *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i += 8)
		*(uint64_t *)(p + i) = (uint64_t)i * 0x9e3779b97f4a7c15ull + seed;
}

static bool holds(const unsigned char *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i += 8)
		if (*(const uint64_t *)(p + i) != (uint64_t)i * 0x9e3779b97f4a7c15ull + seed)
			return false;
	return true;
}

static void test_realloc(void)
{
	large_trim();
	void *p = large_alloc(MIB, PAGE_SIZE, false);
	REQUIRE(p != NULL);
	struct large *l = large_of(p);
	fill(p, MIB, 7);
	/* Occupy the page after the block so that growing must move it. */
	void *guard = mmap((char *)p + MIB, PAGE_SIZE, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	bool guarded = guard == (char *)p + MIB;
	struct lstats s0 = lstats();

	CHECK(large_realloc(l, MIB) == p);   /* same size */
	CHECK(large_realloc(l, MIB - 100) == p && l->map_bytes == MIB);

	void *q = large_realloc(l, 3 * MIB);
	REQUIRE(q != NULL);
	CHECK(large_of(q) == l && l->user == (uintptr_t)q && l->map_bytes == 3 * MIB);
	CHECK(check_block(q, 3 * MIB, PAGE_SIZE, "grown"));
	CHECKF(holds(q, MIB, 7), "content lost growing 1 MiB -> 3 MiB");
	if (guarded)
		CHECKF(q != p, "grew into a mapping that is not ours");
	if (q != p)
		CHECKF(range_free_of(p, MIB, l), "old range still maps to the moved block");
	CHECK(lstats().live_bytes - s0.live_bytes == 2 * MIB);
	if (guard != MAP_FAILED)
		munmap(guard, PAGE_SIZE);
	fill(q, 3 * MIB, 9);

	/* Grow again (in place or not), then shrink by more than half. */
	void *g = large_realloc(l, 8 * MIB + 1);
	REQUIRE(g != NULL);
	CHECK(check_block(g, 8 * MIB + 1, PAGE_SIZE, "grown twice"));
	CHECK(holds(g, 3 * MIB, 9));
	if (g != q)
		CHECK(range_free_of(q, 3 * MIB, l));
	size_t old = l->map_bytes;
	void *h = large_realloc(l, MIB + 1);
	CHECKF(h == g, "shrinking moved the block");
	CHECK(check_block(h, MIB + 1, PAGE_SIZE, "shrunk"));
	CHECK(holds(h, MIB, 9));
	CHECKF(l->map_bytes < old, "shrinking 8 MiB -> 1 MiB kept %zu bytes", l->map_bytes);
	CHECK(range_free_of((char *)h + l->map_bytes, old - l->map_bytes, l));
	CHECK(lstats().live_bytes - s0.live_bytes == l->map_bytes - MIB);
	/* A small shrink: same block, content kept. */
	void *k = large_realloc(l, MIB - 5000);
	CHECK(k == h && check_block(k, MIB - 5000, PAGE_SIZE, "shrunk a little"));
	CHECK(holds(k, MIB - 5000 - 8, 9));
	struct lstats s1 = lstats();
	large_free(l);
	CHECK(lstats().live == s1.live - 1);
	large_trim();
}

/* realloc() keeps touched pages in use: a shrink's tail becomes a cached
 * mapping (the next large malloc gets it), and a block up to 1 MiB growing
 * past its mapping moves into a mapping at hand rather than mremap'ing. */
static void test_realloc_reuse(void)
{
	large_trim();
	unsigned char *p = malloc_fast(MIB);
	REQUIRE(p != NULL);
	fill(p, MIB, 3);
	struct lstats s0 = lstats();
	unsigned char *q = do_realloc(p, 256 * KIB, "test");
	CHECKF(q == p && holds(q, 256 * KIB, 3), "shrinking 1 MiB -> 256 KiB moved it: %p, %p", (void *)p,
	       (void *)q);
	struct lstats s1 = lstats();
	CHECKF(s1.cached == s0.cached + 768 * KIB && s1.live_bytes == s0.live_bytes - 768 * KIB,
	       "the 768 KiB tail: cached %zu -> %zu, live %zu -> %zu", s0.cached, s1.cached, s0.live_bytes,
	       s1.live_bytes);
	CHECK(range_free_of(p + 256 * KIB, 768 * KIB, large_of(p)));
	void *t = large_alloc(700 * KIB, PAGE_SIZE, false);
	CHECKF(t == p + 256 * KIB, "a 700 KiB malloc got %p, not the tail %p", t, (void *)(p + 256 * KIB));
	CHECK(check_block(t, 700 * KIB, PAGE_SIZE, "the tail"));
	free_fast(t, "test");
	free_fast(q, "test");

	large_trim();
	unsigned char *a = malloc_fast(100 * KIB), *spare = malloc_fast(512 * KIB);
	REQUIRE(a && spare);
	fill(a, 100 * KIB, 5);
	free_fast(spare, "test");   /* the thread's slot */
	unsigned char *b = do_realloc(a, 300 * KIB, "test");
	CHECKF(b == spare && holds(b, 100 * KIB, 5), "growing 100 -> 300 KiB: %p (freed mapping %p)",
	       (void *)b, (void *)spare);
	CHECK(large_of(a) == NULL || large_of(a)->state != LARGE_LIVE);
	fill(b, 300 * KIB, 6);
	large_trim();                /* nothing at hand: mremap */
	unsigned char *c = do_realloc(b, 2 * MIB, "test");
	REQUIRE(c != NULL);
	CHECK(check_block(c, 2 * MIB, PAGE_SIZE, "grown by mremap") && holds(c, 300 * KIB, 6));
	free_fast(c, "test");

	/* realloc(p, 0) of a large block asked for with size 0 (memalign)
	 * frees it, in place though it "fits". */
	void *z = do_memalign(8192, 0);
	REQUIRE(z != NULL && large_of(z) != NULL);
	CHECK(do_realloc(z, 0, "test") == NULL);
	CHECKF(large_of(z) == NULL || large_of(z)->state != LARGE_LIVE, "realloc(%p, 0) kept it live", z);

	/* A cached mapping far bigger than the block (3 MiB for 5000 B) is
	 * not taken: a block that stops growing would pin its pages. */
	large_trim();
	void *big = large_alloc(3 * MIB, PAGE_SIZE, false);
	REQUIRE(big != NULL);
	large_free(large_of(big));
	unsigned char *d = malloc_fast(1000);
	REQUIRE(d);
	d = do_realloc(d, 2000, "test");
	REQUIRE(d);
	d = do_realloc(d, 5000, "test");
	REQUIRE(d);
	CHECKF(large_of(d) == NULL, "a 5000 B block took the 3 MiB cached mapping %p", big);
	free_fast(d, "test");
	large_trim();
}

static void test_failures(void)
{
	large_trim();
	struct lstats s0 = lstats();
	page_fail_next(1);
	errno = 0;
	void *p = large_alloc(100000, PAGE_SIZE, false);
	CHECKF(p == NULL && errno == ENOMEM, "with mmap failing: %p, errno %d", p, errno);
	struct lstats s1 = lstats();
	CHECK(s1.live == s0.live && s1.live_bytes == s0.live_bytes && s1.allocs == s0.allocs);
	p = large_alloc(100000, PAGE_SIZE, false);
	CHECKF(p != NULL, "the allocation after the injected failure failed");
	if (p)
		large_free(large_of(p));

	large_trim();   /* or the cached mapping, if 64 KiB-aligned, serves it */
	page_fail_next(1);
	errno = 0;
	p = large_alloc(100000, 64 * KIB, false);
	CHECKF(p == NULL && errno == ENOMEM, "aligned, with mmap failing: %p, errno %d", p, errno);
	p = large_alloc(100000, 64 * KIB, false);
	CHECK(p != NULL && (uintptr_t)p % (64 * KIB) == 0);
	if (p)
		large_free(large_of(p));

	errno = 0;
	CHECK(large_alloc(SIZE_MAX - 100, PAGE_SIZE, false) == NULL && errno == ENOMEM);
	errno = 0;
	CHECK(large_alloc(SIZE_MAX - 100, 2 * MIB, false) == NULL && errno == ENOMEM);
	large_trim();
	struct lstats s2 = lstats();
	CHECK(s2.live == s0.live && s2.live_bytes == s0.live_bytes);
}

static void test_bad_frees(void)
{
	large_trim();
	sheaf_opt.abort_on_error = false;
	void *p = large_alloc(200000, PAGE_SIZE, false);
	REQUIRE(p != NULL);
	struct lstats s0 = lstats();
	fprintf(stderr, "test_large: expect an interior pointer and a double free diagnostic:\n");
	free_slow((char *)p + PAGE_SIZE);
	struct lstats s1 = lstats();
	CHECK(s1.live == s0.live && s1.frees == s0.frees);
	CHECK(check_block(p, 200000, PAGE_SIZE, "after an interior free"));
	free_slow(p);
	struct lstats s2 = lstats();
	CHECK(s2.live == s0.live - 1 && s2.frees == s0.frees + 1);
	free_slow(p);   /* cached or unmapped: either way refused */
	struct lstats s3 = lstats();
	CHECK(s3.live == s2.live && s3.frees == s2.frees && s3.cached == s2.cached);
	sheaf_opt.abort_on_error = true;
	large_trim();
}

/* The cache: mappings unused for large_decay_ms go (checked on frees), an
 * aligned request reuses a cached mapping that happens to be aligned, and
 * a full bin (more entries than a lookup scans) still serves. */
static void test_cache_decay_bins(void)
{
	large_trim();
	unsigned int saved = sheaf_opt.large_decay_ms;
	sheaf_opt.large_decay_ms = 50;
	void *a = large_alloc(256 * 1024, 0, false);
	REQUIRE(a);
	large_free(large_of(a));
	CHECK(lstats().cached == 256 * 1024);
	struct timespec ts = { 0, 120 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	/* Another bin, so a stays cached until the clock, read every
	 * LC_TICK (64) frees, says it is old. */
	for (int i = 0; i < 70; i++) {
		void *b = large_alloc(64 * 1024, 0, false);
		REQUIRE(b);
		large_free(large_of(b));
	}
	CHECKF(lstats().cached == 64 * 1024, "after the decay time: %zu bytes cached, want only the new 64 KiB",
	       lstats().cached);
	sheaf_opt.large_decay_ms = saved;
	large_trim();

	/* Aligned reuse: a 2 MiB-aligned mapping, freed, comes back for the
	 * same aligned request. */
	void *c = large_alloc(2 * MIB, 2 * MIB, false);
	REQUIRE(c && ((uintptr_t)c & (2 * MIB - 1)) == 0);
	large_free(large_of(c));
	void *d = large_alloc(2 * MIB, 2 * MIB, false);
	CHECKF(d == c, "aligned request: got %p, the cached aligned mapping was %p", d, c);
	CHECK(check_block(d, 2 * MIB, 2 * MIB, "aligned reuse"));
	large_free(large_of(d));
	large_trim();

	/* 40 mappings of one bin, all cached; each request is served from
	 * the cache (no new mapping) although a lookup scans only part of a
	 * bin: the newest entries fit. */
	void *m[40];
	for (int i = 0; i < 40; i++) {
		m[i] = large_alloc(100 * 1024, 0, false);
		REQUIRE(m[i]);
	}
	for (int i = 0; i < 40; i++)
		large_free(large_of(m[i]));
	size_t mapped = page_mapped_bytes();
	for (int i = 0; i < 40; i++) {
		m[i] = large_alloc(100 * 1024, 0, false);
		REQUIRE(m[i]);
	}
	CHECKF(page_mapped_bytes() == mapped, "40 cached mappings of one size: %zu bytes mapped anew",
	       page_mapped_bytes() - mapped);
	for (int i = 0; i < 40; i++)
		large_free(large_of(m[i]));
	large_trim();
}

static void *slot_thread(void *arg)
{
	void **out = arg;
	void *p = sheaf_malloc(300 * KIB);
	memset(p, 0x5a, 300 * KIB);
	sheaf_free(p);   /* into this thread's slot, given back at its exit */
	*out = p;
	return NULL;
}

static void test_thread_slot(void)
{
	if (config_tiny)
		return;   /* no per-thread slot */
	large_trim();
	sheaf_opt.abort_on_error = false;
	struct lstats s0 = lstats();
	void *p = sheaf_malloc(200 * KIB);
	REQUIRE(p);
	memset(p, 0xa5, 200 * KIB);
	sheaf_free(p);
	struct lstats s1 = lstats();
	CHECKF(s1.live == s0.live && s1.frees == s0.frees + 1 && s1.cached == s0.cached + round_page(200 * KIB),
	       "after a free into the slot: %zu live, %zu cached (was %zu, %zu)", s1.live, s1.cached, s0.live,
	       s0.cached);
	CHECK(large_of(p) && large_of(p)->state == LARGE_SLOT);
	fprintf(stderr, "test_large: expect a double free diagnostic (block in the thread's slot):\n");
	sheaf_free(p);
	struct lstats s2 = lstats();
	CHECK(s2.frees == s1.frees && s2.cached == s1.cached);
	/* Too small a request for it (it would be more than twice the size):
	 * not from the slot. */
	void *small = sheaf_malloc(80 * KIB);
	CHECK(small != p);
	/* One that fits: the same block, without a new mapping. */
	size_t mapped = page_mapped_bytes();
	void *q = sheaf_malloc(150 * KIB);
	CHECKF(q == p, "malloc that fits the slot's block: %p, the block was %p", q, p);
	CHECK(page_mapped_bytes() == mapped);
	CHECK(check_block(q, 150 * KIB, PAGE_SIZE, "from the slot"));
	CHECK(do_usable_size(q) == round_page(200 * KIB));
	memset(q, 0x77, 150 * KIB);
	sheaf_free(q);
	void *z = sheaf_calloc(1, 190 * KIB);
	CHECK(z == p && range_zero(z, 190 * KIB));
	/* A newer free pushes the older block into the shared cache. */
	sheaf_free(small);
	CHECK(large_of(small)->state == LARGE_SLOT);
	sheaf_free(z);
	CHECK(large_of(z)->state == LARGE_SLOT && large_of(small)->state == LARGE_CACHED);
	/* large_trim() empties the slot too. */
	CHECK(large_trim());
	struct lstats s3 = lstats();
	CHECKF(s3.cached == 0 && s3.live == s0.live && s3.allocs - s0.allocs == s3.frees - s0.frees,
	       "after trim: %zu cached, %zu live", s3.cached, s3.live);

	/* Thread exit: the slot's block goes to the shared cache, counted. */
	void *tp = NULL;
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, slot_thread, &tp) == 0);
	pthread_join(t, NULL);
	struct lstats s4 = lstats();
	CHECKF(s4.live == s0.live && s4.cached == round_page(300 * KIB) && s4.allocs - s0.allocs == s4.frees - s0.frees,
	       "after the thread's exit: %zu live, %zu cached", s4.live, s4.cached);
	void *r = sheaf_malloc(300 * KIB);
	CHECK(r == tp && large_of(r)->state == LARGE_LIVE);
	sheaf_free(r);

	/* large_thread = 0: frees go straight to the cache. */
	size_t saved = sheaf_opt.large_thread;
	sheaf_opt.large_thread = 0;
	large_trim();
	void *u = sheaf_malloc(64 * KIB);
	sheaf_free(u);
	CHECK(large_of(u) && large_of(u)->state == LARGE_CACHED);
	sheaf_opt.large_thread = saved;
	large_trim();
	sheaf_opt.abort_on_error = true;
}

int main(void)
{
	sheaf_init();
	/* The documented meaning of the options, whatever their defaults. */
	sheaf_opt.large_cache_max = 4 * MIB;
	sheaf_opt.large_cache = 16 * MIB;
	test_sizes();
	test_alignment();
	test_cache_reuse();
	test_realloc();
	test_realloc_reuse();
	test_failures();
	test_bad_frees();
	test_cache_decay_bins();
	test_thread_slot();
	struct lstats s = lstats();
	CHECKF(s.live == 0 && s.live_bytes == 0 && s.cached == 0 && s.allocs == s.frees,
	       "at the end: %zu live (%zu B), %zu cached, %llu allocs, %llu frees", s.live,
	       s.live_bytes, s.cached, (unsigned long long)s.allocs, (unsigned long long)s.frees);
	return check_done("test_large");
}
