/*
 * test_cache.c - a cache's slabs: bulk moves, slab lists, release, checks.
 *
 * What it proves:
 *   - cache_alloc_from_slabs() hands out exactly what was asked, distinct
 *     objects of this cache, creating slabs only when no partial or empty
 *     slab is left, and preferring a partial slab to an empty one;
 *   - slabs move between the full, partial and empty lists as their objects
 *     come and go (nr_* always equal the list lengths, every slab's list
 *     matches its fill level, no slab is lost or counted twice);
 *   - cache_free_to_slabs() in bulk returns the pages of empty slabs beyond
 *     the slab_reserve option to the OS (page_resident_run_bytes() falls by
 *     exactly their size) unless the slab_retain budget keeps them, and
 *     cache_retained_bytes() counts the empty slabs of all caches;
 *   - cache_shrink(c, 0) releases every empty slab, and says whether it did;
 *   - a double free inside one bulk free is diagnosed and skipped;
 *   - cache_check_free() refuses an interior pointer, a pointer into the
 *     tail of a slab past its last object, a pointer sheaf never handed out
 *     and an object marked free (double free), counting free_invalid for
 *     the ones it can attribute, and accepts a live object (run with
 *     abort_on_error off: the diagnostics on stderr are expected);
 *   - sheaf_cache_create() validates its arguments (size 0 or above 128
 *     KiB, alignment not a power of two or above 4096, unknown flags ->
 *     NULL + EINVAL) and accepts the edge cases;
 *   - sheaf_cache_destroy() with live objects fails with -1 / EBUSY and the
 *     cache stays usable; once all is freed it returns 0 and releases every
 *     slab.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"

static size_t slab_bytes(const struct sheaf_cache *c)
{
	return SLAB_MIN_BYTES << c->slab_order;
}

/* Walks the three lists: lengths match the counters, every slab sits on
 * the list its fill level says and belongs to `c`.  Returns the objects in
 * use over all slabs through *inuse. */
static bool lists_consistent(struct sheaf_cache *c, unsigned long *inuse)
{
	bool ok = true;
	unsigned long n[3] = { 0, 0, 0 }, used = 0;
	struct slab *heads[3] = { c->node[0].full, c->node[0].partial, c->node[0].empty };
	unsigned int which[3] = { SLAB_ON_FULL, SLAB_ON_PARTIAL, SLAB_ON_EMPTY };
	lock_acquire(&c->node[0].lock);
	for (int l = 0; l < 3; l++) {
		struct slab *prev = NULL;
		for (struct slab *s = heads[l]; s; prev = s, s = s->next) {
			n[l]++;
			used += s->inuse;
			unsigned int want = s->inuse == 0 ? SLAB_ON_EMPTY :
					    s->inuse == s->objects ? SLAB_ON_FULL : SLAB_ON_PARTIAL;
			if (s->list != which[l] || want != which[l] || s->cache != c ||
			    s->prev != prev || pagemap_lookup(s->base) != (uintptr_t)s)
				ok = false;
			if (n[l] > 100000)
				return false;   /* a cycle */
		}
	}
	if (n[0] != c->node[0].nr_full || n[1] != c->node[0].nr_partial || n[2] != c->node[0].nr_empty)
		ok = false;
	lock_release(&c->node[0].lock);
	if (inuse)
		*inuse = used;
	return ok;
}

static unsigned long nr_slabs(const struct sheaf_cache *c)
{
	return c->node[0].nr_full + c->node[0].nr_partial + c->node[0].nr_empty;
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
	return x < y ? -1 : x > y;
}

static bool distinct_of_cache(struct sheaf_cache *c, void **objs, size_t n)
{
	void **s = malloc(n * sizeof(void *));
	REQUIRE(s != NULL);
	memcpy(s, objs, n * sizeof(void *));
	qsort(s, n, sizeof(void *), cmp_ptr);
	bool ok = true;
	for (size_t i = 0; i < n; i++) {
		const struct slab *sl = (const struct slab *)pagemap_lookup((uintptr_t)s[i]);
		if (!sl || ((uintptr_t)sl & PM_TAG_LARGE) || sl->cache != c ||
		    ((uintptr_t)s[i] - sl->base) % c->size != 0)
			ok = false;
		if (i && (uintptr_t)s[i - 1] + c->size > (uintptr_t)s[i])
			ok = false;
	}
	free(s);
	return ok;
}

static size_t empty_bytes_all;

static void sum_empty(struct sheaf_cache *c, void *arg)
{
	(void)arg;
	for (unsigned int k = 0; k < sheaf_nr_nodes; k++)
		empty_bytes_all += c->node[k].nr_empty * slab_bytes(c);
}

/* cache_retained_bytes() is the bytes of the empty slabs of all caches. */
static bool retained_matches(void)
{
	empty_bytes_all = 0;
	caches_foreach(sum_empty, NULL);
	return empty_bytes_all == cache_retained_bytes();
}

/* ------------------------------------------------------------- bulk ops */

static void test_bulk(void)
{
	struct sheaf_cache *c = sheaf_cache_create("test-bulk", 256, 0, SHEAF_NO_SHEAVES, NULL);
	REQUIRE(c != NULL);
	const unsigned int per = c->objects_per_slab;
	const size_t sb = slab_bytes(c);
	enum { SLABS = 12 };
	const unsigned int total = per * SLABS;
	void **objs = calloc(total, sizeof(void *));
	REQUIRE(objs != NULL);
	sheaf_opt.slab_reserve = 1;
	sheaf_opt.slab_retain = 0;   /* nothing beyond the reserve */

	size_t res0 = page_resident_run_bytes();
	uint64_t created0 = c->stat[SHEAF_STAT_slab_alloc];
	CHECK(cache_alloc_from_slabs(c, &c->node[0], objs, total, true) == total);
	CHECKF(nr_slabs(c) == SLABS && c->node[0].nr_full == SLABS, "after %u: %lu full %lu partial %lu empty",
	       total, c->node[0].nr_full, c->node[0].nr_partial, c->node[0].nr_empty);
	CHECK(c->stat[SHEAF_STAT_slab_alloc] - created0 == SLABS);
	CHECKF(page_resident_run_bytes() - res0 == SLABS * sb, "resident grew by %zu, want %zu",
	       page_resident_run_bytes() - res0, SLABS * sb);
	CHECK(distinct_of_cache(c, objs, total));
	unsigned long used;
	CHECK(lists_consistent(c, &used) && used == total);

	/* One more object: a new slab, partial. */
	void *extra;
	CHECK(cache_alloc_from_slabs(c, &c->node[0], &extra, 1, true) == 1);
	CHECK(c->node[0].nr_full == SLABS && c->node[0].nr_partial == 1 && c->node[0].nr_empty == 0);
	struct slab *ps = c->node[0].partial;
	CHECK(pagemap_lookup((uintptr_t)extra) == (uintptr_t)ps);
	/* Free one object of a full slab: it becomes partial too. */
	void *victim = objs[5 * per + 3];
	struct slab *vs = (struct slab *)pagemap_lookup((uintptr_t)victim);
	REQUIRE(vs != NULL && vs->list == SLAB_ON_FULL);
	cache_free_to_slabs(c, &victim, 1);
	CHECK(vs->list == SLAB_ON_PARTIAL && c->node[0].nr_partial == 2 && c->node[0].nr_full == SLABS - 1);
	CHECK(slab_obj_is_free(vs, slab_index(vs, (uintptr_t)victim)));
	/* The next allocation comes from a partial slab, never a new one. */
	void *again;
	uint64_t created1 = c->stat[SHEAF_STAT_slab_alloc];
	CHECK(cache_alloc_from_slabs(c, &c->node[0], &again, 1, true) == 1);
	struct slab *as = (struct slab *)pagemap_lookup((uintptr_t)again);
	CHECK(as == vs || as == ps);
	CHECK(c->stat[SHEAF_STAT_slab_alloc] == created1);
	if (as == vs)
		CHECK(again == victim && vs->list == SLAB_ON_FULL);
	CHECK(lists_consistent(c, &used) && used == total + 1);

	/* Free `again` and the extra object: the victim's slab is partial
	 * (one hole), the extra's slab empty, kept as the reserve. */
	size_t res1 = page_resident_run_bytes();
	void *two[2] = { again, extra };
	cache_free_to_slabs(c, two, 2);
	objs[5 * per + 3] = NULL;
	CHECK(lists_consistent(c, &used) && used == total - 1);
	CHECKF(c->node[0].nr_empty == 1 && c->node[0].nr_full == SLABS - 1 && c->node[0].nr_partial == 1 &&
	       c->node[0].empty == ps && c->node[0].partial == vs,
	       "%lu full %lu partial %lu empty", c->node[0].nr_full, c->node[0].nr_partial, c->node[0].nr_empty);
	CHECK(page_resident_run_bytes() == res1);
	CHECK(retained_matches());

	/* Free the rest in two bulk calls, interleaved across slabs so that
	 * every slab passes through partial: all slabs but the reserve go
	 * back to the OS. */
	void **order = malloc(total * sizeof(void *));
	REQUIRE(order != NULL);
	unsigned int k = 0;
	for (unsigned int i = 0; i < per; i++)
		for (unsigned int sl = 0; sl < SLABS; sl++)
			if (objs[sl * per + i])
				order[k++] = objs[sl * per + i];
	REQUIRE(k == total - 1);
	uint64_t freed0 = c->stat[SHEAF_STAT_slab_free];
	cache_free_to_slabs(c, order, k / 2);
	CHECKF(c->node[0].nr_partial == SLABS && c->node[0].nr_full == 0 && c->node[0].nr_empty == 1,
	       "half freed: %lu partial %lu full", c->node[0].nr_partial, c->node[0].nr_full);
	CHECK(lists_consistent(c, &used) && used == k - k / 2);
	cache_free_to_slabs(c, order + k / 2, k - k / 2);
	CHECK(lists_consistent(c, &used) && used == 0);
	CHECKF(c->node[0].nr_empty == sheaf_opt.slab_reserve && nr_slabs(c) == sheaf_opt.slab_reserve,
	       "after freeing all: %lu empty (reserve %u)", c->node[0].nr_empty, sheaf_opt.slab_reserve);
	CHECK(c->stat[SHEAF_STAT_slab_free] - freed0 == SLABS + 1 - sheaf_opt.slab_reserve);
	CHECKF(res1 - page_resident_run_bytes() == (SLABS + 1 - sheaf_opt.slab_reserve) * sb,
	       "resident fell by %zu, want %zu", res1 - page_resident_run_bytes(),
	       (SLABS + 1 - sheaf_opt.slab_reserve) * sb);
	CHECK(retained_matches());

	/* A bigger reserve keeps more; shrink(0) releases them all. */
	sheaf_opt.slab_reserve = 3;
	CHECK(cache_alloc_from_slabs(c, &c->node[0], objs, total, true) == total);
	cache_free_to_slabs(c, objs, total);
	CHECKF(c->node[0].nr_empty == 3 && nr_slabs(c) == 3, "reserve 3: %lu empty", c->node[0].nr_empty);
	size_t res2 = page_resident_run_bytes();
	CHECK(cache_shrink(c, 0));
	CHECK(c->node[0].nr_empty == 0 && nr_slabs(c) == 0 && c->node[0].empty == NULL);
	CHECK(res2 - page_resident_run_bytes() == 3 * sb);
	CHECK(!cache_shrink(c, 0));   /* nothing left to release */
	CHECK(retained_matches());

	/* The retain budget: empty slabs beyond the reserve stay while all
	 * caches together hold at most slab_retain bytes of them. */
	sheaf_opt.slab_reserve = 1;
	sheaf_opt.slab_retain = 4 * sb + cache_retained_bytes();
	CHECK(cache_alloc_from_slabs(c, &c->node[0], objs, total, true) == total);
	cache_free_to_slabs(c, objs, total);
	CHECKF(c->node[0].nr_empty >= 1, "the reserve was released: %lu empty", c->node[0].nr_empty);
	CHECKF(c->node[0].nr_empty == 1 || cache_retained_bytes() <= sheaf_opt.slab_retain,
	       "%lu empty slabs, %zu B retained, budget %zu", c->node[0].nr_empty, cache_retained_bytes(),
	       sheaf_opt.slab_retain);
	CHECKF(c->node[0].nr_empty <= 5, "%lu empty slabs kept for a budget of 4 beyond the reserve",
	       c->node[0].nr_empty);
	CHECK(retained_matches());
	CHECK(cache_shrink(c, 1));
	CHECK(c->node[0].nr_empty == 1);
	CHECK(cache_shrink(c, 0) && c->node[0].nr_empty == 0);
	sheaf_opt.slab_retain = 0;

	/* A double free inside one bulk free: diagnosed, skipped, counted. */
	sheaf_opt.abort_on_error = false;
	CHECK(cache_alloc_from_slabs(c, &c->node[0], objs, 4, true) == 4);
	void *dup[5] = { objs[0], objs[1], objs[0], objs[2], objs[3] };
	uint64_t inv0 = c->stat[SHEAF_STAT_free_invalid];
	fprintf(stderr, "test_cache: expect a double free diagnostic:\n");
	cache_free_to_slabs(c, dup, 5);
	CHECK(c->stat[SHEAF_STAT_free_invalid] - inv0 == 1);
	CHECK(lists_consistent(c, &used) && used == 0);
	sheaf_opt.abort_on_error = true;

	CHECK(sheaf_cache_destroy(c) == 0);
	free(order);
	free(objs);
}

/* ---------------------------------------------------------- free checks */

static void test_check_free(void)
{
	/* 1000-byte stride: 16 objects per 16 KiB slab, 384 bytes of tail. */
	struct sheaf_cache *c = sheaf_cache_create("test-check", 1000, 0, SHEAF_NO_SHEAVES, NULL);
	REQUIRE(c != NULL);
	REQUIRE(c->size == 1000 && c->slab_order == 0 && c->objects_per_slab == 16);
	void *objs[16];
	REQUIRE(cache_alloc_from_slabs(c, &c->node[0], objs, 16, true) == 16);
	for (int i = 0; i < 16; i++)
		obj_mark_alloc(c, objs[i]);
	const struct slab *s = (const struct slab *)pagemap_lookup((uintptr_t)objs[0]);
	REQUIRE(s != NULL);
	sheaf_opt.abort_on_error = false;
	fprintf(stderr, "test_cache: expect 10 bad pointer diagnostics:\n");

	/* Valid objects, including the last one. */
	for (int i = 0; i < 16; i++) {
		uintptr_t e = pagemap_lookup((uintptr_t)objs[i]);
		CHECK(cache_check_free("test", e, objs[i]) == s);
	}
	uint64_t inv0 = c->stat[SHEAF_STAT_free_invalid];
	/* Interior pointers: one byte in, the last byte of an object. */
	char *o5 = objs[5];
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)(o5 + 1)), o5 + 1) == NULL);
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)(o5 + 999)), o5 + 999) == NULL);
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)(o5 + 8)), o5 + 8) == NULL);
	CHECK(c->stat[SHEAF_STAT_free_invalid] - inv0 == 3);
	/* The tail past object 15: its start and its last byte. */
	char *tail = (char *)s->base + 16 * 1000;
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)tail), tail) == NULL);
	char *last = (char *)s->base + SLAB_MIN_BYTES - 1;
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)last), last) == NULL);
	CHECK(c->stat[SHEAF_STAT_free_invalid] - inv0 == 5);
	/* Foreign: the program's malloc, the stack. */
	void *m = malloc(64);
	int local;
	REQUIRE(m != NULL);
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)m), m) == NULL);
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)&local), &local) == NULL);
	free(m);
	CHECK(c->stat[SHEAF_STAT_free_invalid] - inv0 == 5);
	/* Marked free: a double free; unmarked again: fine. */
	obj_mark_free(c, objs[7]);
	CHECK(obj_marked_free(c, objs[7]));
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)objs[7]), objs[7]) == NULL);
	CHECK(c->stat[SHEAF_STAT_free_invalid] - inv0 == 6);
	obj_mark_alloc(c, objs[7]);
	CHECK(cache_check_free("test", pagemap_lookup((uintptr_t)objs[7]), objs[7]) == s);

	/* Through the public free: a double free is refused before it reaches
	 * the slab, so the object is given back once. */
	sheaf_cache_free(c, objs[9]);
	CHECK(obj_marked_free(c, objs[9]));
	CHECK(s->inuse == 15);
	sheaf_cache_free(c, objs[9]);
	CHECK(s->inuse == 15);
	CHECK(c->stat[SHEAF_STAT_free_invalid] - inv0 == 7);
	/* ... and an object of another cache is refused. */
	struct sheaf_cache *other = sheaf_cache_create("test-other", 1000, 0, SHEAF_NO_SHEAVES, NULL);
	REQUIRE(other != NULL);
	void *foreign = sheaf_cache_alloc(other);
	REQUIRE(foreign != NULL);
	sheaf_cache_free(c, foreign);
	CHECK(c->stat[SHEAF_STAT_free_invalid] - inv0 == 8);
	sheaf_cache_free(other, foreign);
	CHECK(sheaf_cache_destroy(other) == 0);
	sheaf_opt.abort_on_error = true;

	for (int i = 0; i < 16; i++)
		if (i != 9)
			sheaf_cache_free(c, objs[i]);
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* ---------------------------------------------------- create / destroy */

static void test_create_destroy(void)
{
	static const struct {
		size_t size, align;
		unsigned int flags;
	} bad[] = {
		{ 0, 0, 0 }, { 0, 16, 0 }, { 64, 3, 0 }, { 64, 24, 0 }, { 64, 8192, 0 },
		{ 64, 0, 0x4 }, { 64, 0, 0x80000000u }, { CACHE_OBJ_MAX + 1, 0, 0 },
		{ (size_t)-1, 0, 0 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		struct sheaf_cache *c = sheaf_cache_create("bad", bad[i].size, bad[i].align,
							   bad[i].flags, NULL);
		CHECKF(c == NULL && errno == EINVAL, "create(size %zu, align %zu, flags %#x) = %p, errno %d",
		       bad[i].size, bad[i].align, bad[i].flags, (void *)c, errno);
	}
	static const struct {
		size_t size, align;
		unsigned int flags;
		uint32_t want_align;
	} good[] = {
		{ 1, 0, 0, 8 }, { 1, 1, 0, 8 }, { 8, 8, 0, 8 }, { 24, 16, 0, 16 }, { 64, 4096, 0, 4096 },
		{ CACHE_OBJ_MAX, 0, 0, 8 }, { 10, 0, SHEAF_HWCACHE_ALIGN, 64 },
		{ 10, 128, SHEAF_HWCACHE_ALIGN | SHEAF_NO_SHEAVES, 128 },
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct sheaf_cache *c = sheaf_cache_create(NULL, good[i].size, good[i].align,
							   good[i].flags, NULL);
		CHECKF(c != NULL, "create(size %zu, align %zu, flags %#x) failed", good[i].size,
		       good[i].align, good[i].flags);
		if (!c)
			continue;
		CHECK(strcmp(c->name, "(unnamed)") == 0);
		CHECKF(c->align == good[i].want_align && c->size % c->align == 0 &&
		       c->size >= good[i].size, "size %zu: align %u stride %u", good[i].size, c->align,
		       c->size);
		CHECK(c->object_size == good[i].size);
		CHECK((c->sheaf_capacity == 0) == (config_tiny || (good[i].flags & SHEAF_NO_SHEAVES)));
		void *p = sheaf_cache_alloc(c);
		CHECK(p && (uintptr_t)p % good[i].want_align == 0);
		sheaf_cache_free(c, p);
		CHECK(sheaf_cache_destroy(c) == 0);
	}
	CHECK(sheaf_cache_destroy(NULL) == 0);

	/* Destroy with live objects: refused, the cache keeps working. */
	struct sheaf_cache *c = sheaf_cache_create("test-destroy", 48, 0, 0, NULL);
	REQUIRE(c != NULL);
	enum { N = 300 };
	void *objs[N];
	for (int i = 0; i < N; i++) {
		objs[i] = sheaf_cache_alloc(c);
		REQUIRE(objs[i] != NULL);
		memset(objs[i], i, 48);
	}
	for (int i = 0; i < N; i += 2)
		sheaf_cache_free(c, objs[i]);
	fprintf(stderr, "test_cache: expect a destroy refusal:\n");
	errno = 0;
	CHECK(sheaf_cache_destroy(c) == -1 && errno == EBUSY);
	bool intact = true;
	for (int i = 1; i < N; i += 2)
		intact &= ((unsigned char *)objs[i])[0] == (unsigned char)i &&
			  ((unsigned char *)objs[i])[47] == (unsigned char)i;
	CHECKF(intact, "live objects changed by the refused destroy");
	unsigned long used;
	CHECK(lists_consistent(c, &used) && used == N / 2);
	for (int i = 0; i < N; i += 2) {
		objs[i] = sheaf_cache_alloc(c);
		CHECK(objs[i] != NULL);
	}
	CHECK(distinct_of_cache(c, objs, N));
	struct sheaf_cache_stats st;
	sheaf_cache_stats_get(c, &st);
	CHECKF(st.objects_active == N, "objects_active %zu, want %d", st.objects_active, N);
	errno = 0;
	CHECK(sheaf_cache_destroy(c) == -1 && errno == EBUSY);
	for (int i = 0; i < N; i++)
		sheaf_cache_free(c, objs[i]);
	size_t res0 = page_resident_run_bytes();
	size_t held = nr_slabs(c) * slab_bytes(c);
	CHECK(sheaf_cache_destroy(c) == 0);
	/* Every slab went back (the sheaves were drained first). */
	CHECKF(res0 - page_resident_run_bytes() >= held, "destroy released %zu of %zu bytes",
	       res0 - page_resident_run_bytes(), held);
}

int main(void)
{
	sheaf_init();
	test_bulk();
	test_check_free();
	test_create_destroy();
	CHECK(retained_matches());
	return check_done("test_cache");
}
