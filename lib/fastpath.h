/*
 * fastpath.h - the inline fast paths of malloc and free.
 *
 * Each touches only the calling thread's sheaf and has exactly one exit to
 * an out-of-line slow function (mimalloc's rule): no lock, no atomic, no
 * #if.  malloc pops a pointer from the main sheaf of the size class; free
 * finds the slab through the page map, checks that the pointer is the start
 * of an object that is not already free, and pushes it.
 */
#ifndef SHEAF_FASTPATH_H
#define SHEAF_FASTPATH_H

#include "internal.h"

/* lib/malloc.c: the out-of-line implementations behind both the sheaf_*
 * names and glibc's names (preload.c).  `func` names the entry point in
 * diagnostics. */
void *do_malloc_slow(size_t size);
void do_free_slow(void *ptr, uintptr_t e, const char *func);   /* e: ptr's page-map entry */
void *do_calloc(size_t nmemb, size_t size);
void *do_realloc(void *ptr, size_t size, const char *func);
void *do_reallocarray(void *ptr, size_t nmemb, size_t size);
void *do_memalign(size_t align, size_t size);        /* align: a power of two */
void *do_memalign_glibc(size_t align, size_t size);  /* rounds align up */
int do_posix_memalign(void **memptr, size_t align, size_t size);
void *do_aligned_alloc(size_t align, size_t size);
void *do_pvalloc(size_t size);
size_t do_usable_size(const void *ptr);
void do_free_sized(void *ptr, size_t size, const char *func);
int do_malloc_trim(size_t pad);

/* Pops an object of size class `cls` from the thread's main sheaf; NULL
 * when there is none (no thread state, or the sheaf is empty). */
static inline __attribute__((always_inline)) void *class_pop(struct thread_cache *tc, unsigned int cls)
{
	struct pcs *pcs = &tc->pcs[cls];
	if (likely(pcs->size)) {
		void *p = pcs_pop(pcs);
		sheaf_assume(p != NULL);   /* malloc_fast() need not test p again */
		if (config_harden)
			*(cls < CLASS_PAGE ? (uintptr_t *)p : slab_marker(p)) = 0;   /* obj_mark_alloc() */
		return p;
	}
	return NULL;
}

static inline __attribute__((always_inline)) void *malloc_fast(size_t size)
{
	struct thread_cache *tc = sheaf_tc;
	if (likely(size <= SMALL_MAX && tc)) {
		void *p = class_pop(tc, size_to_class(size));
		if (likely(p))
			return p;
	}
	return do_malloc_slow(size);
}

/*
 * free()'s checks and push, shared with sheaf_cache_free(): `ptr` lies in
 * a slab of `objects` objects, idx = slab_start_index() of ptr, and the
 * free marker of object `idx` (if there is one) is at `mark`.  True when
 * it was an object's start, not free already, and went onto the main
 * sheaf of `pcs`; false (nothing changed) leaves the decision to the slow
 * path.
 */
static inline __attribute__((always_inline)) bool
sheaf_push_checked(uint32_t objects, struct pcs *pcs, void *ptr, uint64_t idx, uintptr_t *mark)
{
	if (likely(idx < objects && (!config_harden || !marker_maybe_free(mark, ptr)) &&
		   pcs->size < pcs->capacity)) {
		if (config_harden)
			*mark = free_marker(ptr);
		pcs_push(pcs, ptr);
		return true;
	}
	return false;
}

/*
 * free() of `ptr` whose whole page-map entry `e` the caller has already
 * read.  A malloc size class's page names its class and its index in the
 * slab's run (see the page map), so the checks need only the class's
 * constants, not the slab header.
 */
static inline __attribute__((always_inline)) void free_entry(void *ptr, uintptr_t e, const char *func)
{
	struct thread_cache *tc = sheaf_tc;
	uintptr_t cls = pm_class(e);
	if (likely(tc && cls < NR_CLASSES)) {
		sheaf_assert(ptr);   /* page 0 is never in the page map */
		uint64_t idx = pm_class_index(e, cls, ptr);
		uintptr_t *mark = pm_class_marker(e, cls, ptr, idx);
		if (likely(sheaf_push_checked(class_free_info[cls].objects, &tc->pcs[cls], ptr, idx, mark)))
			return;
	}
	do_free_slow(ptr, pm_owner(e), func);
}

static inline __attribute__((always_inline)) void free_fast(void *ptr, const char *func)
{
	free_entry(ptr, pagemap_entry((uintptr_t)ptr), func);
}

#endif
