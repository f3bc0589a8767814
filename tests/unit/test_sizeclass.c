/*
 * test_sizeclass.c - the malloc size classes and their kmalloc-N caches.
 *
 * What it proves:
 *   - class_size[] has NR_CLASSES strictly increasing entries ending at
 *     SMALL_MAX; every class from 16 B on is a multiple of 16 (so malloc
 *     results of 16 B or more are 16-byte aligned) and every power of two
 *     from 8 B to 32 KiB is a class (memalign relies on it);
 *   - memalign for every alignment up to the page and sizes over all
 *     classes gives an aligned block from the smallest class that is a
 *     multiple of the alignment and holds the size (class_aligned[]);
 *   - size_to_class(n), for every n in 0..32768, is the smallest class that
 *     holds n (checked against a linear search over class_size[]), which
 *     also checks every entry of class_small_index[] and the shift
 *     arithmetic above 1 KiB;
 *   - internal waste (class - n) / n stays within 25% for every n > 128,
 *     and within the 16-byte quantum below;
 *   - every kmalloc_caches[i] is set up for its class: stride, object size,
 *     alignment, index, reciprocal, marker offset, name; its slab holds
 *     objects_per_slab = slab bytes / stride >= 8 objects, wastes at most
 *     1/8 of the slab, and its order is the smallest one with both
 *     properties (the rule of cache.c slab_order_for()); its sheaf capacity
 *     is within 4..128 (the range the sheaf_capacity option documents) and
 *     does not grow with the object size (unless configured otherwise).
 */
#include "fastpath.h"

#include <string.h>

#include "../check.h"

static void test_class_table(void)
{
	CHECK(NR_CLASSES == 41);
	CHECK(class_size[0] == 8);
	CHECK(class_size[NR_CLASSES - 1] == SMALL_MAX);
	for (unsigned int i = 1; i < NR_CLASSES; i++) {
		CHECKF(class_size[i] > class_size[i - 1], "class %u (%u) <= class %u (%u)", i,
		       class_size[i], i - 1, class_size[i - 1]);
		CHECKF(class_size[i] % 16 == 0, "class %u = %u is not a multiple of 16", i,
		       class_size[i]);
	}
	for (uint32_t p = 8; p <= SMALL_MAX; p <<= 1) {
		bool found = false;
		for (unsigned int i = 0; i < NR_CLASSES; i++)
			found |= class_size[i] == p;
		CHECKF(found, "power of two %u is not a size class", p);
	}
}

/* The reference: smallest class >= n, by linear search. */
static unsigned int class_linear(size_t n)
{
	for (unsigned int i = 0; i < NR_CLASSES; i++)
		if (class_size[i] >= n)
			return i;
	return NR_CLASSES;
}

static void test_size_to_class(void)
{
	unsigned int bad = 0;
	for (size_t n = 0; n <= SMALL_MAX; n++) {
		unsigned int got = size_to_class(n), want = class_linear(n);
		if (got != want && bad++ < 10)
			CHECKF(got == want, "size_to_class(%zu) = %u (%u B), want %u (%u B)", n, got,
			       got < NR_CLASSES ? class_size[got] : 0, want, class_size[want]);
		if (got != want)
			continue;
		uint32_t cs = class_size[got];
		if (n > 128 && (size_t)(cs - n) * 4 > n && bad++ < 10)
			CHECKF((size_t)(cs - n) * 4 <= n, "size %zu -> class %u: waste %zu > 25%%", n,
			       cs, cs - n);
		if (n <= 128 && cs - n >= 16 && n > 0 && bad++ < 10)
			CHECKF(cs - n < 16, "size %zu -> class %u: waste %zu >= 16 B", n, cs, cs - n);
	}
	CHECKF(bad == 0, "%u sizes mapped badly", bad);
	/* The classes themselves map to themselves, and one more byte moves up. */
	for (unsigned int i = 0; i < NR_CLASSES; i++) {
		CHECK(size_to_class(class_size[i]) == i);
		if (i + 1 < NR_CLASSES)
			CHECK(size_to_class(class_size[i] + 1) == i + 1);
	}
}

/* The rule of cache.c slab_order_for(): the smallest order whose slab holds
 * at least 8 objects and wastes at most 1/8 of itself. */
static bool order_ok(uint32_t stride, unsigned int order)
{
	size_t bytes = SLAB_MIN_BYTES << order;
	size_t objs = bytes / stride;
	return objs >= 8 && (bytes - objs * stride) * 8 <= bytes;
}

static void test_kmalloc_caches(void)
{
	for (unsigned int i = 0; i < NR_CLASSES; i++) {
		const struct sheaf_cache *c = &kmalloc_caches[i];
		uint32_t cs = class_size[i];
		char name[32];
		snprintf(name, sizeof(name), "kmalloc-%u", cs);

		CHECKF(c->size == cs, "class %u: stride %u", cs, c->size);
		CHECKF(c->object_size == cs, "class %u: object_size %u", cs, c->object_size);
		CHECKF(c->cls == i, "class %u: cls %u, want %u", cs, c->cls, i);
		CHECKF(c->align == (cs >= 16 ? 16u : 8u), "class %u: align %u", cs, c->align);
		CHECKF(c->marker_off == 0, "class %u: marker_off %u (malloc_fast clears word 0)", cs,
		       c->marker_off);
		CHECKF(c->recip == slab_recip(cs), "class %u: recip", cs);
		CHECKF(c->ctor == NULL && c->flags == 0 && !c->debug && c->obj_offset == 0, "class %u: flags", cs);
		CHECKF(strcmp(c->name, name) == 0, "class %u: name \"%s\"", cs, c->name);

		CHECKF(c->slab_order <= SLAB_MAX_ORDER, "class %u: order %u", cs, c->slab_order);
		size_t bytes = SLAB_MIN_BYTES << c->slab_order;
		CHECKF(c->objects_per_slab == bytes / cs, "class %u: objects_per_slab %u, want %zu",
		       cs, c->objects_per_slab, bytes / cs);
		CHECKF(c->objects_per_slab >= 8, "class %u: only %u objects per slab", cs,
		       c->objects_per_slab);
		CHECKF(c->objects_per_slab <= SLAB_MAX_OBJECTS, "class %u: %u objects per slab", cs,
		       c->objects_per_slab);
		size_t waste = bytes - (size_t)c->objects_per_slab * cs;
		CHECKF(waste * 8 <= bytes, "class %u: slab of %zu B wastes %zu B", cs, bytes, waste);
		CHECKF(order_ok(cs, c->slab_order), "class %u: order %u breaks the rule", cs,
		       c->slab_order);
		if (c->slab_order > 0)
			CHECKF(!order_ok(cs, c->slab_order - 1u),
			       "class %u: order %u is not the smallest (%u would do)", cs, c->slab_order,
			       c->slab_order - 1u);

		if (config_tiny) {
			CHECKF(c->sheaf_capacity == 0, "class %u: tiny build has sheaves", cs);
		} else if (sheaf_opt.sheaf_capacity) {
			unsigned int want = sheaf_opt.sheaf_capacity > 1024 ? 1024 : sheaf_opt.sheaf_capacity;
			CHECKF(c->sheaf_capacity == want, "class %u: sheaf_capacity %u, option %u", cs,
			       c->sheaf_capacity, sheaf_opt.sheaf_capacity);
		} else {
			CHECKF(c->sheaf_capacity >= 4 && c->sheaf_capacity <= 128,
			       "class %u: sheaf_capacity %u", cs, c->sheaf_capacity);
			if (i > 0)
				CHECKF(c->sheaf_capacity <= kmalloc_caches[i - 1].sheaf_capacity,
				       "class %u: sheaf_capacity %u > %u of the class below", cs,
				       c->sheaf_capacity, kmalloc_caches[i - 1].sheaf_capacity);
		}
		/* Nothing allocated yet: no slabs, empty barns, on every node. */
		for (unsigned int k = 0; k < sheaf_nr_nodes; k++) {
			const struct cache_node *n = &c->node[k];
			CHECKF(!n->partial && !n->full && !n->empty && !n->nr_partial && !n->nr_full &&
			       !n->nr_empty, "class %u node %u: slabs before any allocation", cs, k);
			CHECKF(n->barn.nr_full == 0 && n->barn.nr_empty == 0,
			       "class %u node %u: barn not empty", cs, k);
		}
	}
}

/* The caches list starts with the classes, in order. */
struct walk {
	unsigned int n;
	bool in_order;
};

static void walk_one(struct sheaf_cache *c, void *arg)
{
	struct walk *w = arg;
	if (w->n < NR_CLASSES && c != &kmalloc_caches[w->n])
		w->in_order = false;
	w->n++;
}

/* do_memalign() for every power-of-two alignment up to the page and sizes
 * across every class: aligned, big enough, and from the smallest class that
 * is both (a linear search over class_size[], against class_aligned[]). */
static void test_memalign_classes(void)
{
	for (unsigned int a = 0; a <= PAGE_SHIFT; a++) {
		size_t align = (size_t)1 << a;
		for (size_t n = 1; n <= SMALL_MAX; n += n < 256 ? 1 : 61) {
			size_t s = n < align ? align : n;
			unsigned int want = 0;
			while (class_size[want] < s || class_size[want] % align)
				want++;
			unsigned int got = class_aligned[size_to_class(s)][a];
			CHECKF(got == want, "align %zu size %zu: class %u, want %u", align, n, got, want);
			void *p = do_memalign(align, n);
			REQUIRE(p);
			CHECKF(((uintptr_t)p & (align - 1)) == 0 && do_usable_size(p) >= n &&
			       (align <= 16 || do_usable_size(p) == class_size[want]),
			       "memalign(%zu, %zu) = %p, usable %zu", align, n, p, do_usable_size(p));
			free_fast(p, "test");
		}
	}
}

int main(void)
{
	sheaf_init();
	test_class_table();
	test_size_to_class();
	test_kmalloc_caches();
	struct walk w = { 0, true };
	caches_foreach(walk_one, &w);
	CHECKF(w.n >= NR_CLASSES && w.in_order, "caches_foreach: %u caches, classes in order: %d",
	       w.n, w.in_order);
	test_memalign_classes();   /* last: the checks above want no slabs yet */
	return check_done("test_sizeclass");
}
