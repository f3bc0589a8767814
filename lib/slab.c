/*
 * slab.c - one slab: a run of pages carved into objects of one stride.
 *
 * The slab header lives out of line (meta.c), with a bitmap of free objects
 * instead of SLUB's in-object freelist: objects never carry allocator
 * pointers that an overflow could corrupt, and putting an object back
 * detects a double free exactly (the bit is already set).  Slabs are only
 * touched in bulk from the sheaf slow paths, so the bitmap scan is amortised
 * over a whole sheaf.
 *
 * All functions here are called with the lock of the slab's node held, except
 * slab_create() (no other thread can see the slab yet) and slab_destroy()
 * (the slab is already off every list).
 */
#include "internal.h"

#include <string.h>
#include <sys/mman.h>

/* The freemap words, then (ext_marks) the markers from the next cache
 * line: every thread's free writes them, the slow paths the freemap. */
static size_t slab_marks_offset(uint32_t objects)
{
	size_t h = sizeof(struct slab) + ((objects + 63) / 64) * sizeof(uint64_t);
	return (h + CACHELINE - 1) & ~(size_t)(CACHELINE - 1);
}

static size_t slab_header_size(const struct sheaf_cache *c, uint32_t objects)
{
	if (c->ext_marks)
		return slab_marks_offset(objects) + objects * sizeof(uintptr_t);
	return sizeof(struct slab) + ((objects + 63) / 64) * sizeof(uint64_t);
}

/* The run goes back to the page source as plain memory. */
static void slab_unguard(const struct slab *s)
{
	if (s->guard)
		mprotect((char *)s->run + (SLAB_MIN_BYTES << s->order) - PAGE_SIZE, PAGE_SIZE,
			 PROT_READ | PROT_WRITE);
}

struct class_free_info class_free_info[NR_CLASSES];

void slab_layout_init(struct sheaf_cache *c)
{
	uint32_t objects = c->objects_per_slab;
	c->base_off = 0;
	if (c->guard) {
		/* The slack goes first, so that the last object ends at the
		 * guard page (to within the alignment).  The run is a
		 * multiple of the page and the objects of the stride, so the
		 * slack is a multiple of every power of two (up to the page)
		 * that divides the stride: objects keep all the alignment
		 * memalign() expects of a class (test_secure checks it). */
		size_t bytes = (SLAB_MIN_BYTES << c->slab_order) - PAGE_SIZE;
		c->base_off = (uint32_t)((bytes - (size_t)objects * c->size) & ~(size_t)(c->align - 1));
	}
	if (c->cls < NR_CLASSES) {
		struct class_free_info *k = &class_free_info[c->cls];
		k->inv = slab_inverse(c->size, &k->rot);
		k->objects = objects;
		k->size = c->size;
		k->base_off = c->base_off;
		k->marks_off = c->ext_marks ? (uint32_t)slab_marks_offset(objects) : 0;
	}
}

struct slab *slab_create(struct sheaf_cache *c, unsigned int node)
{
	uint32_t objects = c->objects_per_slab;
	struct slab *s = meta_alloc(slab_header_size(c, objects));   /* zeroed */
	if (!s)
		return NULL;
	void *run = page_alloc_run(c->slab_order);
	if (!run) {
		meta_free(s, slab_header_size(c, objects));
		return NULL;
	}
	s->node = (uint8_t)node;
	if (c->ext_marks)
		s->marks = (uintptr_t *)((char *)s + slab_marks_offset(objects));
	vg_fresh(run, SLAB_MIN_BYTES << c->slab_order);
	/* A failed mprotect (the process is out of mappings: each guard
	 * splits one) leaves the page unused but readable. */
	s->guard = c->guard && mprotect((char *)run + (SLAB_MIN_BYTES << c->slab_order) - PAGE_SIZE,
					PAGE_SIZE, PROT_NONE) == 0;
	if (c->guard && !s->guard)
		stat(c, guard_fail);
	s->run = (uintptr_t)run;
	s->base = (uintptr_t)run + c->base_off;
	s->recip = c->recip;
	s->inv = slab_inverse(c->size, &s->rot);
	s->size = c->size;
	s->cls = c->debug ? CLASS_NONE : c->cls;   /* debugged: never the free fast path */
	s->order = c->slab_order;
	s->cache = c;
	s->objects = objects;
	s->inuse = 0;
	for (uint32_t w = 0; w < objects / 64; w++)
		s->freemap[w] = ~0ull;
	if (objects % 64)
		s->freemap[objects / 64] = (1ull << (objects % 64)) - 1;
	if (c->debug & (DEBUG_U | DEBUG_Z)) {   /* call sites; sizes asked for */
		s->tracks = meta_alloc(debug_track_bytes(objects));
		if (!s->tracks)
			goto fail;
	}
	if (c->debug)
		debug_slab_init(c, s);
	if (c->ctor)
		for (uint32_t i = 0; i < objects; i++)
			c->ctor((void *)(s->base + (uintptr_t)i * c->size + c->obj_offset));
	if (!pagemap_set_slab(s, (SLAB_MIN_BYTES << s->order) >> PAGE_SHIFT, s->cls))
		goto fail;
	stat(c, slab_alloc);
	return s;

fail:
	if (s->tracks)
		meta_free(s->tracks, debug_track_bytes(objects));
	slab_unguard(s);
	page_free_run(run, s->order);
	meta_free(s, slab_header_size(c, objects));
	return NULL;
}

void slab_destroy(struct slab *s)
{
	struct sheaf_cache *c = s->cache;
	pagemap_set(s->run, (SLAB_MIN_BYTES << s->order) >> PAGE_SHIFT, 0);
	slab_unguard(s);
	page_free_run((void *)s->run, s->order);
	if (s->tracks)
		meta_free(s->tracks, debug_track_bytes(s->objects));
	meta_free(s, slab_header_size(c, s->objects));
	stat(c, slab_free);
}

/* xorshift64*: the secure object order needs unpredictability from the
 * outside, not statistics; the state is per cache node, under its lock. */
static uint64_t slab_rnd(struct cache_node *n)
{
	uint64_t x = n->rnd;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	n->rnd = x;
	return x * 0x2545F4914F6CDD1Dull;
}

unsigned int slab_take(struct slab *s, void **out, unsigned int n)
{
	unsigned int got = 0;
	uint32_t words = (s->objects + 63) / 64, start = 0;
	if (unlikely(s->cache->guard))   /* secure: start at a random word */
		start = (uint32_t)(slab_rnd(slab_node(s)) % words);
	for (uint32_t k = 0; k < words && got < n; k++) {
		uint32_t w = start + k < words ? start + k : start + k - words;
		uint64_t bits = s->freemap[w];
		while (bits && got < n) {
			unsigned int b = (unsigned int)__builtin_ctzll(bits);
			bits &= bits - 1;
			out[got++] = (void *)(s->base + ((uintptr_t)w * 64 + b) * s->size);
		}
		s->freemap[w] = bits;
	}
	s->inuse += got;
	if (unlikely(s->cache->guard))   /* secure: Fisher-Yates over the batch */
		for (unsigned int i = got; i > 1; i--) {
			unsigned int j = (unsigned int)(slab_rnd(slab_node(s)) % i);
			void *t = out[i - 1];
			out[i - 1] = out[j];
			out[j] = t;
		}
	return got;
}

bool slab_obj_is_free(const struct slab *s, uint32_t idx)
{
	return (s->freemap[idx / 64] >> (idx % 64)) & 1;
}

bool slab_put(struct slab *s, void *obj)
{
	uint32_t idx = slab_index(s, (uintptr_t)obj);
	uint64_t bit = 1ull << (idx % 64);
	if (s->freemap[idx / 64] & bit)
		return false;
	s->freemap[idx / 64] |= bit;
	s->inuse--;
	return true;
}
