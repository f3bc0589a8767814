/*
 * malloc.c - the malloc family, under sheaf_* names.
 *
 * The do_* functions are the out-of-line implementations (hidden, so that
 * preload.c calls them directly, without a PLT hop); the sheaf_* functions
 * are the exported names for programs that link sheaf explicitly, or that
 * run under a sanitizer which interposes malloc itself.
 *
 * Sizes above PTRDIFF_MAX fail with ENOMEM before any arithmetic, as in
 * glibc: no object may be larger than the difference of two pointers.
 */
#include "fastpath.h"

#include <errno.h>
#include <string.h>

#define SIZE_IMPOSSIBLE(n) ((n) > (size_t)PTRDIFF_MAX)

void *do_malloc_slow(size_t size)
{
	if (unlikely(!__atomic_load_n(&sheaf_ready, __ATOMIC_ACQUIRE)))
		sheaf_init();
	void *p;
	if (likely(size <= SMALL_MAX)) {
		struct sheaf_cache *c = &kmalloc_caches[size_to_class(size)];
		p = cache_alloc_any(c);
		if (unlikely(c->debug) && p)
			debug_set_size(c, p, size);   /* SHEAF_DEBUG=Z: bytes past size */
	} else if (SIZE_IMPOSSIBLE(size)) {
		errno = ENOMEM;
		return NULL;
	} else {
		struct thread_cache *tc = sheaf_tc;
		p = tc ? large_slot_pop(tc, size, false) : NULL;
		if (!p)
			p = large_alloc(size, PAGE_SIZE, false);
	}
	if (unlikely(sheaf_prof_on))
		prof_alloc(p, size);
	return p;
}

/* A large allocation handed to free/realloc: NULL after a diagnostic if the
 * pointer is not the start of a live one. */
static inline __attribute__((always_inline)) struct large *
large_check(const char *func, uintptr_t e, void *ptr)
{
	struct large *l = (struct large *)(e & ~PM_TAG_LARGE);
	if (unlikely(l->state != LARGE_LIVE)) {
		diag_bad_pointer(func, ptr, "double free of %p (large allocation)", ptr);
		return NULL;
	}
	if (unlikely((uintptr_t)ptr != l->user)) {
		diag_bad_pointer(func, ptr, "interior pointer %p: large allocation %p + %lu", ptr,
				 (void *)l->user, (unsigned long)((uintptr_t)ptr - l->user));
		return NULL;
	}
	return l;
}

/* e: ptr's page-map entry, as free_fast() read it (the deferred frees
 * processed at the end may unmap other blocks, never this one first). */
void do_free_slow(void *ptr, uintptr_t e, const char *func)
{
	if (!ptr)
		return;
	if (unlikely(sheaf_prof_on))
		prof_free(ptr);
	if (e & PM_TAG_LARGE) {
		struct large *l = large_check(func, e, ptr);
		struct thread_cache *tc = sheaf_tc;
		if (l && !tc)
			tc = thread_cache_get();   /* a thread whose first block is large */
		if (l && !(tc && large_slot_push(tc, l)))
			large_free(l);
	} else {
		struct slab *s = cache_check_free(func, e, ptr);
		if (s)
			cache_free_any(s->cache, ptr);
	}
	nolock_poll();
}

/* Usable size of a valid block, or 0 (and no diagnostic) for anything else. */
size_t do_usable_size(const void *ptr)
{
	if (!ptr)
		return 0;
	uintptr_t e = pagemap_lookup((uintptr_t)ptr);
	if (!e)
		return 0;
	if (e & PM_TAG_LARGE) {
		struct large *l = (struct large *)(e & ~PM_TAG_LARGE);
		return l->state == LARGE_LIVE && l->user == (uintptr_t)ptr ? large_usable(l) : 0;
	}
	struct slab *s = (struct slab *)e;
	uint32_t idx = slab_index(s, (uintptr_t)ptr);
	if (idx >= s->objects ||
	    s->base + (uintptr_t)idx * s->size + s->cache->obj_offset != (uintptr_t)ptr)
		return 0;
	return s->cache->object_size;
}

/*
 * Zeroes n <= CALLOC_INLINE_MAX bytes with a few overlapping stores, not a
 * call to memset: for a small calloc() the call and memset's size dispatch
 * cost about as much as the allocation.  Exactly n bytes: a debugged
 * class keeps a red zone right after the requested size.
 */
#define CALLOC_INLINE_MAX 128
typedef uint64_t zero16_t __attribute__((vector_size(16)));
static inline __attribute__((always_inline)) void zero_small(unsigned char *p, size_t n)
{
	const zero16_t z = { 0, 0 };
	if (n >= 16) {
		for (size_t i = 0; i + 16 < n; i += 16) {
			__builtin_memcpy(p + i, &z, 16);
			__asm__("" : : "r"(p) : "memory");   /* not a call to memset */
		}
		__builtin_memcpy(p + n - 16, &z, 16);
	} else if (n >= 8) {
		__builtin_memcpy(p, &z, 8);
		__builtin_memcpy(p + n - 8, &z, 8);
	} else if (n >= 4) {
		__builtin_memcpy(p, &z, 4);
		__builtin_memcpy(p + n - 4, &z, 4);
	} else if (n) {
		p[0] = 0;
		p[n / 2] = 0;
		p[n - 1] = 0;
	}
}

void *do_calloc(size_t nmemb, size_t size)
{
	size_t total;
	if (unlikely(__builtin_mul_overflow(nmemb, size, &total) || SIZE_IMPOSSIBLE(total))) {
		errno = ENOMEM;
		return NULL;
	}
	if (total > SMALL_MAX) {
		if (unlikely(!sheaf_ready))
			sheaf_init();
		struct thread_cache *tc = sheaf_tc;
		void *p = tc ? large_slot_pop(tc, total, false) : NULL;
		if (p)
			zero_block(p, total);
		else
			p = large_alloc(total, PAGE_SIZE, true);
		if (unlikely(sheaf_prof_on))
			prof_alloc(p, total);
		return p;
	}
	void *p = malloc_fast(total);
	if (likely(p && total <= CALLOC_INLINE_MAX))
		zero_small(p, total);
	else if (p)
		zero_block(p, total);
	return p;
}

/*
 * The size a growing realloc() of a small block allocates.  A block that
 * grows a second time in a row (the thread's last growing realloc returned
 * it) is being appended to - a string, a vector - so it gets the largest
 * class up to twice the request: the next growths then stay in place, and a
 * doubling loop copies half as often.  At most 2x, so that the block stays
 * put (size >= usable / 2) when it is realloc'ed to its size again.
 * glibc needs none of this at the top of its heap, where a block simply
 * extends; a size-class allocator must copy at every class change.
 */
#define REALLOC_PAGES_MIN 4096
#define REALLOC_COPY_MAX (1u << 20)
static size_t realloc_size(size_t size)
{
	size_t want = size <= SMALL_MAX / 2 ? 2 * size : SMALL_MAX;
	unsigned int c = size_to_class(want);
	if (class_size[c] > want)
		c--;
	if (kmalloc_caches[c].debug)
		return size;   /* SHEAF_DEBUG=Z checks the bytes past the size asked for */
	return class_size[c];   /* >= size: there is a class in [size, 2 size] */
}

/* A mapping for a growing block that costs no system call: the thread's
 * freed large block or a cached one (either may be bigger: the block is
 * likely to keep growing into it; large_fits() bounds it); NULL if there is
 * none. */
static void *large_at_hand(struct thread_cache *tc, size_t size)
{
	void *q = tc ? large_slot_pop(tc, size, true) : NULL;
	return q ? q : large_alloc_ex(size, PAGE_SIZE, false, LA_GROW | LA_CACHED_ONLY);
}

/*
 * realloc() that moves (or frees, or allocates): everything do_realloc()'s
 * in-place test leaves, with the checks that diagnose a bad pointer.  `entry`
 * is ptr's page-map entry, which do_realloc() read.
 */
static noinline void *realloc_slow(void *ptr, uintptr_t entry, size_t size, const char *func)
{
	uintptr_t e = pm_owner(entry);
	if (!ptr)
		return malloc_fast(size);
	if (size == 0) {
		/* glibc frees and returns NULL (REALLOC_ZERO_BYTES_FREES). */
		free_entry(ptr, entry, func);
		return NULL;
	}
	if (SIZE_IMPOSSIBLE(size)) {
		errno = ENOMEM;
		return NULL;
	}
	struct thread_cache *tc = sheaf_tc;
	size_t usable;
	void *q = NULL;
	bool big = size > SMALL_MAX;
	if (e & PM_TAG_LARGE) {
		struct large *l = large_check(func, e, ptr);
		if (!l) {
			errno = EINVAL;
			return NULL;
		}
		usable = large_usable(l);
		/* Mappings resize in place or by mremap; only a shrink by
		 * more than half to a small size moves to a slab.  Growth
		 * past the mapping of a block up to REALLOC_COPY_MAX takes a
		 * mapping at hand and copies: its pages are touched, where
		 * mremap's new ones would each cost a page fault (and the
		 * move a TLB shoot-down in a threaded program). */
		if (size > SMALL_MAX || size >= l->req / 2) {
			if (size > usable && l->map_bytes <= REALLOC_COPY_MAX)
				big |= (q = large_at_hand(tc, size)) != NULL;
			if (!q && (q = large_realloc(l, size)))
				return q;
		}
	} else {
		struct slab *s = cache_check_free(func, e, ptr);
		if (!s) {
			errno = EINVAL;
			return NULL;
		}
		usable = s->cache->object_size;
		/* Stay put while the block is at most half empty (a debugged
		 * cache's object moves: its red zone follows the size). */
		if (size <= usable && size >= usable / 2 && !s->cache->debug)
			return ptr;
		if (s->cache->debug && usable > size)
			usable = size;   /* do not copy the red zone slack */
	}
	bool grown = tc && tc->grown == ptr;
	if (q)
		;   /* a mapping at hand, above */
	else if (size <= usable)
		q = malloc_fast(size);   /* shrinking */
	else if (big) {
		q = tc ? large_slot_pop(tc, size, true) : NULL;
		if (!q)
			q = large_alloc_ex(size, PAGE_SIZE, false, LA_GROW);
	} else {
		/* A block appended to again that reaches a page goes to a
		 * mapping of its own if one is at hand: from there it grows
		 * in place or by mremap, where a slab copies it at every
		 * class change up to SMALL_MAX and once more into a mapping.
		 * Its page rounding wastes less than realloc_size()'s 2x
		 * headroom. */
		if (grown && size >= REALLOC_PAGES_MIN) {
			q = large_at_hand(tc, size);
			big = q != NULL;
		}
		if (!q)
			q = malloc_fast(grown ? realloc_size(size) : size);
	}
	if (!q)
		return NULL;   /* the old block stays valid */
	if (tc && !tc->dead)
		tc->grown = size > usable ? q : NULL;
	if (big && unlikely(sheaf_prof_on))
		prof_alloc(q, size);
	memcpy(q, ptr, size < usable ? size : usable);
	free_entry(ptr, entry, func);
	return q;
}

/*
 * The cases a string or vector appended to mostly hits: the block stays
 * where it is.  Checked as strictly as free() checks (the start of a live
 * block), with no call and no stack frame; everything else, including
 * every diagnostic, is realloc_slow()'s.
 */
HOT_ALIGN void *do_realloc(void *ptr, size_t size, const char *func)
{
	uintptr_t entry = pagemap_entry((uintptr_t)ptr), e = pm_owner(entry);
	if (e & PM_TAG_LARGE) {
		struct large *l = (struct large *)(e & ~PM_TAG_LARGE);
		size_t bytes = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
		/* Growing within the mapping (large_realloc()'s first case;
		 * aligned blocks and memcheck's move by copy). */
		if (likely(l->state == LARGE_LIVE && (uintptr_t)ptr == l->base && l->user == l->base &&
			   size >= l->req && size && bytes >= size && bytes <= l->map_bytes - l->guard &&
			   !sheaf_on_valgrind)) {
			l->req = size;
			return ptr;
		}
	} else if (e) {
		const struct slab *s = (const struct slab *)e;
		uint64_t idx = slab_start_index(s, (uintptr_t)ptr);
		/* A size class's live object whose class still fits:
		 * free_fast()'s checks, and the same rule as realloc_slow().
		 * (The slab header, not the entry's class: a block being
		 * resized is in use, its header likely in cache, and the
		 * header's index costs fewer instructions.) */
		if (likely(s->cls < NR_CLASSES && idx < s->objects && size <= s->size &&
			   size >= s->size / 2 && !s->cache->debug &&
			   (!config_harden || !marker_maybe_free(s->marks ? &s->marks[idx] : (uintptr_t *)ptr, ptr))))
			return ptr;
	}
	return realloc_slow(ptr, entry, size, func);
}

void *do_reallocarray(void *ptr, size_t nmemb, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(nmemb, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return do_realloc(ptr, total, "reallocarray()");
}

/* do_memalign() past its inline pop: first use, an empty sheaf, a
 * debugged class, an alignment above the page or a size above the classes. */
static noinline void *memalign_slow(size_t align, size_t size)
{
	if (SIZE_IMPOSSIBLE(size)) {
		errno = ENOMEM;
		return NULL;
	}
	if (unlikely(!sheaf_ready))
		sheaf_init();
	size_t s = size < align ? align : size;
	if (align <= PAGE_SIZE && s <= SMALL_MAX) {
		unsigned int cls = class_aligned[size_to_class(s)][__builtin_ctzl(align)];
		/* Red zones would misalign a debugged class's objects beyond
		 * 16 bytes: such blocks come from mappings.  (A debugged class
		 * has no sheaves, so do_memalign()'s pop found none.) */
		if (!(kmalloc_caches[cls].debug & DEBUG_Z) || align <= 16)
			return cache_alloc_any(&kmalloc_caches[cls]);
	}
	return large_alloc(size, align, false);
}

/* `align` is a power of two. */
void *do_memalign(size_t align, size_t size)
{
	if (align <= 16 && (align <= 8 || size > 8))
		return malloc_fast(size);
	struct thread_cache *tc = sheaf_tc;
	size_t s = size < align ? align : size;
	/* Slabs are page-aligned, so a class whose size is a multiple of
	 * `align` gives aligned objects.  (A thread state means the classes
	 * are set up.) */
	if (likely(align <= PAGE_SIZE && s <= SMALL_MAX && tc)) {
		void *p = class_pop(tc, class_aligned[size_to_class(s)][__builtin_ctzl(align)]);
		if (likely(p))
			return p;
	}
	return memalign_slow(align, size);
}

static bool power_of_two(size_t x)
{
	return x && !(x & (x - 1));
}

int do_posix_memalign(void **memptr, size_t align, size_t size)
{
	if (!power_of_two(align) || align % sizeof(void *))
		return EINVAL;
	int saved = errno;
	void *p = do_memalign(align, size);
	if (!p) {
		errno = saved;
		return ENOMEM;
	}
	*memptr = p;
	return 0;
}

void *do_aligned_alloc(size_t align, size_t size)
{
	if (!power_of_two(align)) {
		errno = EINVAL;
		return NULL;
	}
	return do_memalign(align, size);
}

/* glibc's memalign: a non-power-of-two alignment is rounded up. */
void *do_memalign_glibc(size_t align, size_t size)
{
	if (align > SIZE_MAX / 2 + 1) {
		errno = EINVAL;
		return NULL;
	}
	if (!power_of_two(align))
		align = align ? (size_t)1 << (64 - __builtin_clzl(align)) : 1;
	return do_memalign(align, size);
}

void *do_pvalloc(size_t size)
{
	size_t rounded = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	if (rounded < size) {
		errno = ENOMEM;
		return NULL;
	}
	return do_memalign(PAGE_SIZE, rounded ? rounded : PAGE_SIZE);
}

void do_free_sized(void *ptr, size_t size, const char *func)
{
	if (ptr && size > do_usable_size(ptr) && pagemap_lookup((uintptr_t)ptr)) {
		diag_bad_pointer(func, ptr, "size %zu larger than the block %p (%zu bytes)", size, ptr,
				 do_usable_size(ptr));
		return;
	}
	free_fast(ptr, func);
}

static void trim_cache(struct sheaf_cache *c, void *arg)
{
	bool *released = arg;
	barn_drain(c);
	if (cache_shrink(c, 0))
		*released = true;
}

static void trim_ext(struct thread_cache *tc, void *arg)
{
	struct thread_cache *self = arg;
	if (tc != self)
		return;
	for (unsigned int i = 0; i < tc->nr_ext; i++)
		if (tc->ext[i].main != &sheaf_empty || tc->ext[i].spare)
			pcs_drain(tc->ext[i].cache, &tc->ext[i], &tc->ext[i].cache->node[tc->node]);
}

int do_malloc_trim(size_t pad)
{
	(void)pad;
	if (!sheaf_ready)
		return 0;
	nolock_poll();
	struct thread_cache *tc = thread_cache_get();
	if (tc) {
		for (int i = 0; i < NR_CLASSES; i++)
			pcs_drain(&kmalloc_caches[i], &tc->pcs[i], &kmalloc_caches[i].node[tc->node]);
		threads_foreach(trim_ext, tc);
	}
	bool released = false;
	caches_foreach(trim_cache, &released);
	if (large_trim())
		released = true;
	return released;
}

/* ------------------------------------------------------- exported names */
void *sheaf_malloc(size_t size) { return malloc_fast(size); }
void sheaf_free(void *ptr) { free_fast(ptr, "sheaf_free()"); }
void *sheaf_calloc(size_t n, size_t size) { return do_calloc(n, size); }
void *sheaf_realloc(void *ptr, size_t size) { return do_realloc(ptr, size, "sheaf_realloc()"); }
void *sheaf_reallocarray(void *ptr, size_t n, size_t size) { return do_reallocarray(ptr, n, size); }
void sheaf_free_sized(void *ptr, size_t size) { do_free_sized(ptr, size, "sheaf_free_sized()"); }
void sheaf_free_aligned_sized(void *ptr, size_t align, size_t size)
{
	(void)align;
	do_free_sized(ptr, size, "sheaf_free_aligned_sized()");
}
int sheaf_posix_memalign(void **memptr, size_t align, size_t size)
{
	return do_posix_memalign(memptr, align, size);
}
void *sheaf_aligned_alloc(size_t align, size_t size) { return do_aligned_alloc(align, size); }
void *sheaf_memalign(size_t align, size_t size) { return do_memalign_glibc(align, size); }
void *sheaf_valloc(size_t size) { return do_memalign(PAGE_SIZE, size); }
void *sheaf_pvalloc(size_t size) { return do_pvalloc(size); }
size_t sheaf_malloc_usable_size(void *ptr) { return do_usable_size(ptr); }
int sheaf_malloc_trim(size_t pad) { return do_malloc_trim(pad); }

/* ------------------------------------------------------------ cache API */
/*
 * The slab cache API's fast paths: malloc_fast()'s and free_fast()'s, on
 * the thread's pcs of a user cache (tc->ext[c->id], which exists once the
 * thread has used the cache through the slow path).  Everything else -
 * first use, empty or full sheaf, a stash for signal handlers to refill,
 * constructors, debugged caches, every diagnostic - is cache_alloc_any()'s
 * and cache_free_slow()'s.
 */
static inline struct pcs *cache_pcs_fast(struct thread_cache *tc, struct sheaf_cache *c)
{
	if (!tc || c->id >= tc->nr_ext || tc->nolock_want || tc->dead)
		return NULL;
	struct pcs *pcs = &tc->ext[c->id];
	return pcs->cache == c ? pcs : NULL;
}

void *sheaf_cache_alloc(struct sheaf_cache *c)
{
	struct pcs *pcs = cache_pcs_fast(sheaf_tc, c);
	if (likely(pcs)) {
		if (likely(pcs->size)) {
			void *p = pcs_pop(pcs);
			obj_mark_alloc(c, p);
			return p;
		}
	}
	return cache_alloc_any(c);
}

static noinline void cache_free_slow(struct sheaf_cache *c, void *obj);

void sheaf_cache_free(struct sheaf_cache *c, void *obj)
{
	uintptr_t e = pagemap_lookup((uintptr_t)obj);
	const struct slab *slab = (const struct slab *)e;
	struct pcs *pcs = cache_pcs_fast(sheaf_tc, c);
	if (likely(pcs && e && !(e & PM_TAG_LARGE) && slab->cache == c && !c->obj_offset)) {
		uint64_t idx = slab_start_index(slab, (uintptr_t)obj);
		uintptr_t *mark = slab->marks ? (uintptr_t *)((uintptr_t)slab->marks + idx * sizeof(uintptr_t))
					      : (uintptr_t *)((uintptr_t)obj + c->marker_off);
		if (likely(sheaf_push_checked(slab->objects, pcs, obj, idx, mark)))
			return;
	}
	cache_free_slow(c, obj);
}

static noinline void cache_free_slow(struct sheaf_cache *c, void *obj)
{
	if (!obj)
		return;
	uintptr_t e = pagemap_lookup((uintptr_t)obj);
	if (e & PM_TAG_LARGE) {
		diag_bad_pointer("sheaf_cache_free()", obj,
				 "pointer %p is a large malloc allocation, not an object of cache %s",
				 obj, c->name);
		return;
	}
	struct slab *s = cache_check_free("sheaf_cache_free()", e, obj);
	if (!s)
		return;
	if (unlikely(s->cache != c)) {
		stat(c, free_invalid);
		diag_bad_pointer("sheaf_cache_free()", obj, "object %p belongs to cache %s, not %s", obj,
				 s->cache->name, c->name);
		return;
	}
	cache_free_any(c, obj);
}

/* Whole runs from the main sheaf (as the kernel's bulk paths copy from the
 * per-CPU sheaf), newest first like single allocations; the slow path
 * refills it one object at a time. */
size_t sheaf_cache_alloc_bulk(struct sheaf_cache *c, size_t n, void **out)
{
	size_t got = 0;
	while (got < n) {
		struct pcs *pcs = cache_pcs_fast(sheaf_tc, c);
		if (pcs && pcs->size) {
			uint32_t k = pcs->size < n - got ? pcs->size : (uint32_t)(n - got);
			void **top = pcs->main->objects + pcs->size;
			pcs->size -= k;
			barrier();
			for (uint32_t i = 0; i < k; i++) {
				void *p = top[-1 - (int32_t)i];
				obj_mark_alloc(c, p);
				out[got + i] = p;
			}
			pcs->alloc_fast += k;
			got += k;
			continue;
		}
		void *p = cache_alloc_any(c);
		if (!p)
			break;
		out[got++] = p;
	}
	if (got < n) {
		sheaf_cache_free_bulk(c, got, out);
		errno = ENOMEM;
		return 0;
	}
	return n;
}

void sheaf_cache_free_bulk(struct sheaf_cache *c, size_t n, void **objs)
{
	for (size_t i = 0; i < n; i++)
		sheaf_cache_free(c, objs[i]);
}
