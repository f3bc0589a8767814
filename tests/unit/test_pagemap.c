/*
 * test_pagemap.c - the page map and the reciprocal object index.
 *
 * What it proves:
 *   - pagemap_set()/pagemap_lookup() store one entry per 4 KiB page: every
 *     byte of a page reads its page's entry, neighbours stay 0, a range that
 *     crosses a leaf boundary (1 GiB) or spans more than a whole leaf is set
 *     and cleared completely, leaves are created on first use only;
 *   - the top of the 48-bit space (just below 2^47 and 2^48) works, while
 *     any address >= 2^48 reads 0 and cannot be set (false);
 *   - an address in a GiB that has no leaf, a stack address and a pointer
 *     from the program's own malloc read 0;
 *   - slab_index() (one multiply by slab_recip(stride) and a shift, instead
 *     of a division) equals offset / stride for every stride from 8 B to
 *     128 KiB in steps of 8 (every stride a cache can have) at every object
 *     start and the bytes either side of it, within the largest slab such a
 *     stride can get (4 MiB from 16 KiB strides up, 256 KiB below); for the
 *     41 kmalloc strides it is checked at every offset of their slab;
 *   - a malloc size class's slab pages carry their class and their index in
 *     the run in the entry's high bits (pagemap_set_slab()), and free()'s
 *     computation from them and class_free_info[] (the run's start, the
 *     object's index by exact division, the external marker's address)
 *     agrees with the slab header at every object start of a slab of every
 *     class, and rejects every non-start tried; a user cache's slab pages and
 *     a large block's pages carry no class, so their frees take the slow
 *     path.
 * The page map entries written here use made-up values and address ranges
 * far from anything this process maps, and are cleared again.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "../check.h"

#define GIB ((uintptr_t)1 << 30)
#define LEAF_PAGES ((size_t)1 << PM_L2_BITS)

static uintptr_t leaf_index(uintptr_t a)
{
	return a >> (PAGE_SHIFT + PM_L2_BITS);
}

/* Every page of [a, a + npages pages) reads `val` (first, middle and last
 * byte of each page, or only a sample of pages when there are many). */
static bool range_reads(uintptr_t a, size_t npages, uintptr_t val)
{
	size_t step = npages > 4096 ? 97 : 1;
	for (size_t i = 0; i < npages; i += step) {
		uintptr_t p = a + (i << PAGE_SHIFT);
		if (pagemap_lookup(p) != val || pagemap_lookup(p + PAGE_SIZE / 2) != val ||
		    pagemap_lookup(p + PAGE_SIZE - 1) != val)
			return false;
	}
	uintptr_t last = a + ((npages - 1) << PAGE_SHIFT);
	return pagemap_lookup(last) == val && pagemap_lookup(last + PAGE_SIZE - 1) == val;
}

static void test_basic(void)
{
	/* 0x5a5a_0000_0000 (about 90 TiB): far above any mmap of a test. */
	uintptr_t a = (uintptr_t)0x5a5a << 32;
	REQUIRE(pagemap_l1[leaf_index(a)] == NULL);
	CHECK(pagemap_lookup(a) == 0);
	CHECK(pagemap_l1[leaf_index(a)] == NULL);   /* a lookup creates nothing */

	CHECK(pagemap_set(a + 3 * PAGE_SIZE, 5, 0x1230));
	CHECK(pagemap_l1[leaf_index(a)] != NULL);
	CHECK(range_reads(a + 3 * PAGE_SIZE, 5, 0x1230));
	CHECK(pagemap_lookup(a + 3 * PAGE_SIZE - 1) == 0);
	CHECK(pagemap_lookup(a + 8 * PAGE_SIZE) == 0);
	CHECK(pagemap_lookup(a) == 0);
	/* Overwrite part, tag a large entry, then clear. */
	CHECK(pagemap_set(a + 5 * PAGE_SIZE, 1, 0x4560 | PM_TAG_LARGE));
	CHECK(pagemap_lookup(a + 5 * PAGE_SIZE + 17) == (0x4560 | PM_TAG_LARGE));
	CHECK(pagemap_lookup(a + 4 * PAGE_SIZE) == 0x1230);
	CHECK(pagemap_lookup(a + 6 * PAGE_SIZE) == 0x1230);
	CHECK(pagemap_set(a + 3 * PAGE_SIZE, 5, 0));
	CHECK(range_reads(a, 16, 0));
	CHECK(pagemap_set(a, 0, 0x999));   /* zero pages: nothing, and fine */
	CHECK(pagemap_lookup(a) == 0);

	/* Nothing of ours: a stack address, the program's own malloc. */
	int local;
	CHECK(pagemap_lookup((uintptr_t)&local) == 0);
	void *m = malloc(100);
	REQUIRE(m != NULL);
	CHECK(pagemap_lookup((uintptr_t)m) == 0);
	free(m);
	CHECK(pagemap_lookup(0) == 0);
}

static void test_leaf_boundaries(void)
{
	/* Two pages either side of a GiB boundary: two leaves. */
	uintptr_t b = (uintptr_t)0x5b00 * GIB;
	uintptr_t a = b - 2 * PAGE_SIZE;
	REQUIRE(leaf_index(a) + 1 == leaf_index(b));
	CHECK(pagemap_set(a, 4, 0x7770));
	CHECK(pagemap_l1[leaf_index(a)] != NULL && pagemap_l1[leaf_index(b)] != NULL);
	CHECK(range_reads(a, 4, 0x7770));
	CHECK(pagemap_lookup(a - 1) == 0);
	CHECK(pagemap_lookup(b + 2 * PAGE_SIZE) == 0);
	CHECK(pagemap_lookup(b - 1) == 0x7770 && pagemap_lookup(b) == 0x7770);
	CHECK(pagemap_set(a, 4, 0));
	CHECK(range_reads(a - PAGE_SIZE, 6, 0));

	/* A range longer than a whole leaf, starting mid-leaf: three leaves,
	 * the middle one filled completely. */
	uintptr_t s = (uintptr_t)0x5c00 * GIB - 3 * PAGE_SIZE;
	size_t n = LEAF_PAGES + 7;
	CHECK(pagemap_set(s, n, 0xabc0));
	CHECK(range_reads(s, n, 0xabc0));
	CHECK(pagemap_lookup(s - 1) == 0);
	CHECK(pagemap_lookup(s + (n << PAGE_SHIFT)) == 0);
	CHECK(pagemap_lookup((uintptr_t)0x5c01 * GIB - 1) == 0xabc0);   /* end of the middle leaf */
	CHECK(pagemap_lookup((uintptr_t)0x5c01 * GIB) == 0xabc0);
	CHECK(pagemap_lookup((uintptr_t)0x5c01 * GIB + 4 * PAGE_SIZE - 1) == 0xabc0);
	CHECK(pagemap_lookup((uintptr_t)0x5c01 * GIB + 4 * PAGE_SIZE) == 0);
	CHECK(pagemap_set(s, n, 0));
	CHECK(range_reads(s, n, 0));
	/* Every page of the middle leaf, exactly. */
	const uintptr_t *leaf = pagemap_l1[leaf_index((uintptr_t)0x5c00 * GIB)];
	REQUIRE(leaf != NULL);
	size_t nonzero = 0;
	for (size_t i = 0; i < LEAF_PAGES; i++)
		nonzero += leaf[i] != 0;
	CHECKF(nonzero == 0, "%zu entries left in a cleared leaf", nonzero);
}

static void test_high_addresses(void)
{
	uintptr_t top47 = ((uintptr_t)1 << 47) - PAGE_SIZE;
	uintptr_t top48 = ((uintptr_t)1 << 48) - PAGE_SIZE;
	CHECK(pagemap_set(top47, 1, 0x4700));
	CHECK(pagemap_lookup(top47) == 0x4700);
	CHECK(pagemap_lookup(top47 + PAGE_SIZE - 1) == 0x4700);
	CHECK(pagemap_lookup(top47 - 1) == 0);
	CHECK(pagemap_lookup(top47 + PAGE_SIZE) == 0);   /* 2^47: another leaf */
	CHECK(pagemap_set(top48, 1, 0x4800));
	CHECK(pagemap_lookup(top48) == 0x4800);
	CHECK(pagemap_lookup(top48 + PAGE_SIZE - 1) == 0x4800);
	/* 2^48 and above: outside the map. */
	CHECK(pagemap_lookup((uintptr_t)1 << 48) == 0);
	CHECK(pagemap_lookup(((uintptr_t)1 << 48) + top47) == 0);   /* would alias top47 */
	CHECK(pagemap_lookup(((uintptr_t)1 << 48) + top48) == 0);
	CHECK(pagemap_lookup(UINTPTR_MAX) == 0);
	CHECK(pagemap_lookup(UINTPTR_MAX - top48) == 0);
	CHECK(!pagemap_set((uintptr_t)1 << 48, 1, 0x1));
	CHECK(!pagemap_set(((uintptr_t)1 << 48) + top47, 1, 0x1));
	CHECK(pagemap_lookup(top47) == 0x4700);   /* not aliased by the refused set */
	/* A range running off the end is refused, and its part inside is
	 * undone: the caller frees the owner it named. */
	CHECK(!pagemap_set(top48, 2, 0x4801));
	CHECK(pagemap_lookup((uintptr_t)1 << 48) == 0);
	CHECK(pagemap_lookup(top48) == 0);
	CHECK(pagemap_set(top48, 1, 0x4800));
	CHECK(pagemap_set(top47, 1, 0));
	CHECK(pagemap_set(top48, 1, 0));
	CHECK(pagemap_lookup(top47) == 0 && pagemap_lookup(top48) == 0);
}

/* ------------------------------------------------------- reciprocal index */

static unsigned long idx_bad;

static void check_index(const struct slab *s, uint32_t stride, uintptr_t off)
{
	uint32_t got = slab_index(s, s->base + off);
	uintptr_t want = off / stride;
	if (got != want && idx_bad++ < 10)
		CHECKF(got == want, "stride %u offset %lu: slab_index %u, want %lu", stride,
		       (unsigned long)off, got, (unsigned long)want);
}

/* The largest slab a stride can get: a cache picks the smallest order with
 * at least 8 objects (cache.c slab_order_for()), which is at most 128 KiB
 * below 16 KiB strides and 1 MiB up to 128 KiB ones; the test covers 256 KiB
 * and 4 MiB, the whole SLAB_MAX_ORDER run. */
static size_t range_for(uint32_t stride)
{
	return stride >= 16384 ? (size_t)4 << 20 : (size_t)256 << 10;
}

static void test_recip_all_strides(void)
{
	struct slab s;
	memset(&s, 0, sizeof(s));
	s.base = 0;
	for (uint32_t stride = 8; stride <= CACHE_OBJ_MAX; stride += 8) {
		s.size = stride;
		s.recip = slab_recip(stride);
		size_t range = range_for(stride);
		for (uintptr_t off = 0; off < range; off += stride) {
			check_index(&s, stride, off);
			check_index(&s, stride, off + 1);
			if (off)
				check_index(&s, stride, off - 1);
		}
		check_index(&s, stride, range - 1);
		check_index(&s, stride, range);
	}
	CHECKF(idx_bad == 0, "%lu offsets indexed wrongly", idx_bad);
}

/* Every offset of the slabs of the malloc classes, as their caches are
 * set up. */
static void test_recip_kmalloc_dense(void)
{
	struct slab s;
	memset(&s, 0, sizeof(s));
	s.base = (uintptr_t)0x7f0000000000;   /* never dereferenced */
	idx_bad = 0;
	for (unsigned int i = 0; i < NR_CLASSES; i++) {
		const struct sheaf_cache *c = &kmalloc_caches[i];
		s.size = c->size;
		s.recip = c->recip;
		CHECK(c->recip == slab_recip(c->size));
		size_t bytes = SLAB_MIN_BYTES << c->slab_order;
		for (uintptr_t off = 0; off < bytes; off++)
			check_index(&s, c->size, off);
	}
	CHECKF(idx_bad == 0, "%lu kmalloc offsets indexed wrongly", idx_bad);
}

/* ------------------------------------------------- class page entries -- */

/* free()'s view of address p (fastpath.h free_entry()): the index of the
 * object that starts there, >= the class's objects when none does. */
static uint64_t entry_index(uintptr_t p)
{
	uintptr_t e = pagemap_entry(p);
	return pm_class_index(e, pm_class(e), (const void *)p);
}

static void test_class_entries(void)
{
	unsigned long bad = 0;
	for (unsigned int cls = 0; cls < NR_CLASSES; cls++) {
		void *p = sheaf_malloc(class_size[cls]);
		REQUIRE(p);
		const struct slab *s = (const struct slab *)pagemap_lookup((uintptr_t)p);
		REQUIRE(s && !((uintptr_t)s & PM_TAG_LARGE));
		const struct class_free_info *k = &class_free_info[cls];
		size_t npages = (SLAB_MIN_BYTES << s->order) >> PAGE_SHIFT;
		CHECKF(s->cls == cls && k->objects == s->objects && k->size == s->size &&
		       k->base_off == s->base - s->run,
		       "class %u: header and class_free_info disagree", cls);
		if (s->marks)
			CHECKF((uintptr_t)s + k->marks_off == (uintptr_t)s->marks,
			       "class %u: marks_off %u", cls, k->marks_off);
		else
			CHECKF(k->marks_off == 0, "class %u: marks_off %u", cls, k->marks_off);
		for (size_t pg = 0; pg < npages; pg++) {
			uintptr_t e = pagemap_entry(s->run + (pg << PAGE_SHIFT));
			if (pm_owner(e) != (uintptr_t)s || (e >> PM_CLASS_SHIFT) != cls + 1 ||
			    ((e >> PM_PAGE_SHIFT) & PM_PAGE_MASK) != pg) {
				if (bad++ < 10)
					CHECKF(0, "class %u page %zu: entry %#lx", cls, pg, (unsigned long)e);
			}
		}
		for (uint32_t i = 0; i < s->objects; i++) {
			uintptr_t o = s->base + (uintptr_t)i * s->size, e = pagemap_entry(o);
			uint64_t idx = entry_index(o);
			uintptr_t *want = s->marks ? &s->marks[i] : (uintptr_t *)o;
			bool ok = pm_class(e) == cls && idx == i &&
				  pm_class_marker(e, cls, (void *)o, idx) == want;
			/* Interior bytes (and one below the first object,
			 * while inside the run) are no object's start. */
			uintptr_t in[3] = { o + 1, o + s->size / 2, o + s->size - 1 };
			for (int j = 0; j < 3; j++)
				ok &= entry_index(in[j]) >= k->objects;
			if (o > s->run)
				ok &= entry_index(o - 1) >= k->objects;
			if (!ok && bad++ < 10)
				CHECKF(0, "class %u object %u: index %lu", cls, i, (unsigned long)idx);
		}
		/* Past the last object, up to the end of the run. */
		uintptr_t end = s->run + (npages << PAGE_SHIFT);
		for (uintptr_t a = s->base + (uintptr_t)s->objects * s->size; a < end; a += 8)
			if (entry_index(a) < k->objects && bad++ < 10)
				CHECKF(0, "class %u: tail address %#lx indexed", cls, (unsigned long)a);
		sheaf_free(p);
	}
	CHECKF(bad == 0, "%lu class page entries wrong", bad);

	struct sheaf_cache *c = sheaf_cache_create("test-entry", 64, 0, 0, NULL);
	REQUIRE(c);
	void *o = sheaf_cache_alloc(c);
	REQUIRE(o);
	uintptr_t e = pagemap_entry((uintptr_t)o);
	CHECKF(pm_class(e) >= NR_CLASSES && pm_owner(e) == pagemap_lookup((uintptr_t)o) && pm_owner(e),
	       "user cache entry %#lx", (unsigned long)e);
	sheaf_cache_free(c, o);
	CHECK(sheaf_cache_destroy(c) == 0);

	void *big = sheaf_malloc((size_t)1 << 20);
	REQUIRE(big);
	e = pagemap_entry((uintptr_t)big);
	CHECKF(pm_class(e) >= NR_CLASSES && (e & PM_TAG_LARGE), "large entry %#lx", (unsigned long)e);
	sheaf_free(big);
}

int main(void)
{
	sheaf_init();
	test_basic();
	test_leaf_boundaries();
	test_high_addresses();
	test_recip_all_strides();
	test_recip_kmalloc_dense();
	test_class_entries();
	return check_done("test_pagemap");
}
