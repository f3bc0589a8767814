/*
 * test_slab.c - one slab: carving, the free bitmap, the page map.
 *
 * What it proves:
 *   - slab_create() on a user cache (cache_setup) gives a page-aligned run
 *     of SLAB_MIN_BYTES << order bytes with objects_per_slab objects, all
 *     free, and points the page map entry of every page of the run at the
 *     slab (the pages just outside are not);
 *   - slab_take(n) hands out min(n, free) distinct objects, each inside the
 *     run and at a multiple of the stride, lowest first, keeping inuse and
 *     the bitmap in step; with nothing free it gives 0;
 *   - slab_put() returns an object (its bit set again, inuse down) and a
 *     second slab_put() of the same object returns false and changes
 *     nothing: the bitmap catches double frees exactly;
 *   - objects put back are taken again; slab_obj_is_free() tracks each;
 *   - slab_destroy() clears the page map entries of the whole run;
 *   - a constructor runs exactly once per object, on that object's start,
 *     when the slab is created, and not again when objects are taken and
 *     put back; the free marker of a ctor cache lies after the object;
 *   - the same holds for a slab of every malloc size class;
 *   - slab_start_index() (free()'s exact division) gives the object's
 *     index for every object start and a number >= the object count for
 *     every other offset tried: each byte around each start, interior
 *     bytes, addresses below the slab and past its end, for every stride
 *     from 1 to 4,160 bytes and large ones, odd and even.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "../check.h"

static size_t slab_bytes(const struct slab *s)
{
	return SLAB_MIN_BYTES << s->order;
}

/* Every page of the run maps to `want`; the page before and after do not. */
static bool pages_map_to(const struct slab *s, uintptr_t want)
{
	size_t bytes = slab_bytes(s);
	for (size_t off = 0; off < bytes; off += PAGE_SIZE)
		if (pagemap_lookup(s->base + off) != want ||
		    pagemap_lookup(s->base + off + PAGE_SIZE - 1) != want)
			return false;
	return true;
}

static unsigned int nr_free(const struct slab *s)
{
	unsigned int n = 0;
	for (uint32_t i = 0; i < s->objects; i++)
		n += slab_obj_is_free(s, i);
	return n;
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
	return x < y ? -1 : x > y;
}

/* `n` objects from slab_take: distinct, inside the run, stride-aligned. */
static bool objects_valid(const struct slab *s, void **objs, unsigned int n)
{
	void **sorted = malloc((n ? n : 1) * sizeof(void *));
	REQUIRE(sorted != NULL);
	memcpy(sorted, objs, n * sizeof(void *));
	qsort(sorted, n, sizeof(void *), cmp_ptr);
	bool ok = true;
	for (unsigned int i = 0; i < n; i++) {
		uintptr_t p = (uintptr_t)sorted[i];
		if (p < s->base || p + s->size > s->base + (uintptr_t)s->objects * s->size ||
		    (p - s->base) % s->size != 0)
			ok = false;
		if (i && sorted[i] == sorted[i - 1])
			ok = false;
	}
	free(sorted);
	return ok;
}

/* Takes and puts objects of a fresh slab of `c`; destroys it. */
static void exercise_slab(struct sheaf_cache *c)
{
	struct slab *s = slab_create(c, 0);
	REQUIRE(s != NULL);
	const char *name = c->name;
	uint32_t n = c->objects_per_slab;

	CHECKF(s->cache == c && s->size == c->size && s->order == c->slab_order &&
	       s->cls == c->cls && s->recip == c->recip, "%s: slab header", name);
	CHECKF(s->objects == n && s->inuse == 0, "%s: objects %u inuse %u", name, s->objects,
	       s->inuse);
	CHECKF(s->base % PAGE_SIZE == 0, "%s: base %#lx not page-aligned", name,
	       (unsigned long)s->base);
	CHECKF((size_t)n * s->size <= slab_bytes(s), "%s: objects overrun the run", name);
	CHECKF(nr_free(s) == n, "%s: %u of %u free after create", name, nr_free(s), n);
	CHECKF(pages_map_to(s, (uintptr_t)s), "%s: page map of the slab", name);
	CHECKF(pagemap_lookup(s->base - 1) != (uintptr_t)s, "%s: page before maps to the slab",
	       name);
	CHECKF(pagemap_lookup(s->base + slab_bytes(s)) != (uintptr_t)s,
	       "%s: page after maps to the slab", name);

	void **objs = calloc(n + 1, sizeof(void *));
	REQUIRE(objs != NULL);

	/* Take a third, then the rest (asking for one more than there is). */
	unsigned int first = n / 3 + 1;
	CHECK(slab_take(s, objs, first) == first);
	CHECK(s->inuse == first);
	for (unsigned int i = 0; i < first; i++)
		CHECKF(objs[i] == (void *)(s->base + (uintptr_t)i * s->size),
		       "%s: take %u gave %p, lowest free first", name, i, objs[i]);
	unsigned int rest = slab_take(s, objs + first, n + 1 - first);
	CHECKF(rest == n - first, "%s: second take got %u, want %u", name, rest, n - first);
	CHECK(s->inuse == n);
	CHECKF(objects_valid(s, objs, n), "%s: objects not distinct/in the run/aligned", name);
	CHECK(nr_free(s) == 0);
	void *none = NULL;
	CHECK(slab_take(s, &none, 1) == 0 && none == NULL);
	CHECK(s->inuse == n);
	/* Every object is writable in full (stride bytes). */
	for (unsigned int i = 0; i < n; i++)
		memset(objs[i], 0x5a, s->size);

	/* Put back every other object; a second put is refused. */
	unsigned int put = 0;
	for (unsigned int i = 0; i < n; i += 2) {
		CHECK(slab_put(s, objs[i]));
		put++;
		uint32_t idx = slab_index(s, (uintptr_t)objs[i]);
		CHECK(slab_obj_is_free(s, idx));
	}
	CHECK(s->inuse == n - put);
	unsigned int refused = 0;
	for (unsigned int i = 0; i < n; i += 2)
		refused += !slab_put(s, objs[i]);
	CHECKF(refused == put, "%s: %u of %u double puts refused", name, refused, put);
	CHECKF(s->inuse == n - put, "%s: a refused put changed inuse to %u", name, s->inuse);
	CHECK(nr_free(s) == put);
	for (unsigned int i = 1; i < n; i += 2)
		CHECK(!slab_obj_is_free(s, slab_index(s, (uintptr_t)objs[i])));

	/* What was put back is what is taken again. */
	void **again = calloc(n + 1, sizeof(void *));
	REQUIRE(again != NULL);
	CHECK(slab_take(s, again, n) == put);
	bool same = true;
	for (unsigned int i = 0, j = 0; i < n; i += 2, j++)
		same &= again[j] == objs[i];
	CHECKF(same, "%s: retaken objects differ from those put back", name);
	CHECK(s->inuse == n);

	/* All back. */
	for (unsigned int i = 0; i < n; i++)
		CHECK(slab_put(s, objs[i]));
	CHECK(s->inuse == 0 && nr_free(s) == n);

	uintptr_t base = s->base;
	size_t bytes = slab_bytes(s);
	slab_destroy(s);
	bool cleared = true;
	for (size_t off = 0; off < bytes; off += PAGE_SIZE)
		cleared &= pagemap_lookup(base + off) == 0;
	CHECKF(cleared, "%s: page map entries left after slab_destroy", name);
	free(again);
	free(objs);
}

/* ----------------------------------------------------------- constructor */

static struct sheaf_cache ctor_cache;
static struct cache_node ctor_nodes[SHEAF_MAX_NODES];
static unsigned long ctor_calls;
static bool ctor_bad_ptr;

struct ctor_obj {
	uint64_t magic;
	uint32_t calls;
	char payload[84];
};
#define CTOR_MAGIC 0xc0ffee0123456789ull

static void ctor(void *p)
{
	struct ctor_obj *o = p;
	ctor_calls++;
	if (o->magic == CTOR_MAGIC) {
		o->calls++;
	} else {
		o->magic = CTOR_MAGIC;
		o->calls = 1;
	}
	memset(o->payload, 0x77, sizeof(o->payload));
	if ((uintptr_t)p % 8)
		ctor_bad_ptr = true;
}

static void test_ctor(void)
{
	REQUIRE(cache_setup(&ctor_cache, ctor_nodes, "test-ctor", sizeof(struct ctor_obj), 0, 0, ctor,
			    -1) == 0);
	struct sheaf_cache *c = &ctor_cache;
	/* The marker word goes after the object, which keeps its state. */
	CHECKF(c->marker_off >= sizeof(struct ctor_obj), "ctor cache marker_off %u", c->marker_off);
	CHECKF(c->size >= c->marker_off + sizeof(uintptr_t), "ctor cache stride %u", c->size);

	struct slab *s = slab_create(c, 0);
	REQUIRE(s != NULL);
	uint32_t n = s->objects;
	CHECKF(ctor_calls == n, "constructor ran %lu times for %u objects", ctor_calls, n);
	CHECK(!ctor_bad_ptr);
	bool once = true;
	for (uint32_t i = 0; i < n; i++) {
		const struct ctor_obj *o = (const struct ctor_obj *)(s->base + (uintptr_t)i * s->size);
		once &= o->magic == CTOR_MAGIC && o->calls == 1 && o->payload[0] == 0x77 &&
			o->payload[sizeof(o->payload) - 1] == 0x77;
	}
	CHECKF(once, "some object was not constructed exactly once");

	void **objs = calloc(n, sizeof(void *));
	REQUIRE(objs != NULL);
	CHECK(slab_take(s, objs, n) == n);
	for (uint32_t i = 0; i < n; i++)
		CHECK(slab_put(s, objs[i]));
	CHECK(slab_take(s, objs, n) == n);
	CHECKF(ctor_calls == n, "constructor ran again on take/put: %lu", ctor_calls);
	for (uint32_t i = 0; i < n; i++)
		slab_put(s, objs[i]);
	slab_destroy(s);

	/* A second slab constructs its own objects. */
	s = slab_create(c, 0);
	REQUIRE(s != NULL);
	CHECKF(ctor_calls == 2ul * n, "second slab: constructor ran %lu times", ctor_calls);
	slab_destroy(s);
	free(objs);
}

/* ------------------------------------------------------ slab_start_index */

static unsigned long start_index_failures;

static void start_index_one(uint32_t size, uint32_t objects)
{
	struct slab s = { .base = (uintptr_t)1 << 40, .size = size, .objects = objects };
	s.inv = slab_inverse(size, &s.rot);
	/* Whole strides around the slab, and bytes around each start. */
	for (int64_t i = -3; i <= (int64_t)objects + 3; i++) {
		for (int64_t d = -2; d <= 2; d++) {
			int64_t off = i * (int64_t)size + d;
			if (d && (d < 0 ? -d : d) >= (int64_t)size)
				continue;
			uint64_t got = slab_start_index(&s, s.base + (uintptr_t)off);
			bool start = d == 0 && i >= 0 && i < (int64_t)objects;
			if (start ? got != (uint64_t)i : got < objects) {
				if (start_index_failures++ < 5)
					fprintf(stderr, "slab_start_index: size %u objects %u offset %lld: %llu\n",
						size, objects, (long long)off, (unsigned long long)got);
			}
		}
	}
	/* Interior bytes of a few objects, and far away on both sides. */
	for (uint32_t k = 1; k < size && k < 64; k++) {
		uint64_t got = slab_start_index(&s, s.base + (uintptr_t)(objects / 2) * size + k);
		if (got < objects && start_index_failures++ < 5)
			fprintf(stderr, "slab_start_index: size %u interior +%u: %llu\n", size, k,
				(unsigned long long)got);
	}
	if (slab_start_index(&s, 0) < objects || slab_start_index(&s, UINTPTR_MAX) < objects ||
	    slab_start_index(&s, s.base + ((uintptr_t)1 << 39)) < objects)
		if (start_index_failures++ < 5)
			fprintf(stderr, "slab_start_index: size %u: far address taken\n", size);
}

static void test_start_index(void)
{
	for (uint32_t size = 1; size <= 4160; size++)
		start_index_one(size, (uint32_t)((SLAB_MIN_BYTES << 2) / size) + 1);
	static const uint32_t big[] = { 8191, 12288, 20480, 24576, 32768, 40000, 65535, 65536,
					 98304, 100000, 131072 };
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		start_index_one(big[i], 64);
	for (int c = 0; c < NR_CLASSES; c++)
		start_index_one(kmalloc_caches[c].size, kmalloc_caches[c].objects_per_slab);
	CHECKF(start_index_failures == 0, "slab_start_index wrong %lu times", start_index_failures);
}

int main(void)
{
	sheaf_init();
	test_start_index();

	/* User caches of a few shapes: odd stride, tail waste, big objects,
	 * cache-line alignment, page alignment, the smallest and largest. */
	static struct sheaf_cache uc[7];
	static struct cache_node uc_nodes[7][SHEAF_MAX_NODES];
	static const struct {
		size_t size, align;
		unsigned int flags;
	} shapes[] = {
		{ 24, 0, 0 }, { 1000, 0, 0 }, { 40, 0, SHEAF_HWCACHE_ALIGN }, { 3000, 4096, 0 },
		{ 8, 0, 0 }, { CACHE_OBJ_MAX, 0, 0 }, { 100000, 16, 0 },
	};
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "test-%zu-%zu", shapes[i].size, shapes[i].align);
		REQUIRE(cache_setup(&uc[i], uc_nodes[i], name, shapes[i].size, shapes[i].align,
				    shapes[i].flags, NULL, -1) == 0);
		CHECKF(uc[i].cls == CLASS_NONE, "%s: cls %u", name, uc[i].cls);
		size_t align = uc[i].align;
		CHECKF(uc[i].size >= shapes[i].size && uc[i].size % align == 0,
		       "%s: stride %u align %zu", name, uc[i].size, align);
		exercise_slab(&uc[i]);
	}
	/* Through the public constructor too. */
	struct sheaf_cache *pc = sheaf_cache_create("test-public", 72, 8, 0, NULL);
	REQUIRE(pc != NULL);
	exercise_slab(pc);
	CHECK(sheaf_cache_destroy(pc) == 0);

	test_ctor();

	for (unsigned int i = 0; i < NR_CLASSES; i++)
		exercise_slab(&kmalloc_caches[i]);
	return check_done("test_slab");
}
