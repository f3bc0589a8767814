/*
 * nolock.c - allocation and free from signal handlers (the kernel's
 * kmalloc_nolock() / kfree_nolock()).
 *
 * A handler may interrupt its own thread anywhere, including inside
 * malloc's fast path or a slow path that holds a lock.  So these functions
 * never wait for a lock (trylock only), never allocate metadata, never call
 * mmap, and never touch the thread's sheaves while the interrupted code is
 * changing them (thread_cache->busy, maintained by every path that changes
 * a pcs).  When they cannot proceed:
 *   sheaf_malloc_nolock() returns NULL (errno EAGAIN);
 *   sheaf_free_nolock() defers the free: the object goes on a lock-free
 *   list (linked through its free-marker word, which free() would have
 *   written anyway) that the next allocator slow path of any thread, or the
 *   rcu drain thread, frees normally.
 * Everything here is async-signal-safe in the POSIX sense: it uses only
 * atomics, trylocks, write(2) (diagnostics) and abort().
 */
#include "fastpath.h"

#include <errno.h>

void *nolock_deferred;
void (*sheaf_test_hook)(int point);

void nolock_process(void)
{
	void *p = __atomic_exchange_n(&nolock_deferred, NULL, __ATOMIC_ACQUIRE);
	while (p) {
		uintptr_t e = pagemap_lookup((uintptr_t)p);
		void *next;
		if (e & PM_TAG_LARGE)
			next = *(void **)p;
		else
			next = *(void **)((char *)p + ((struct slab *)e)->cache->marker_off);
		do_free_slow(p, "sheaf_free_nolock()");
		p = next;
	}
}

static void nolock_defer(void *p, uintptr_t e)
{
	void **link = (e & PM_TAG_LARGE) ? (void **)p :
		      (void **)((char *)p + ((struct slab *)e)->cache->marker_off);
	void *head = __atomic_load_n(&nolock_deferred, __ATOMIC_RELAXED);
	do
		*link = head;
	while (!__atomic_compare_exchange_n(&nolock_deferred, &head, p, true, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
}

/* The pcs of cache c in tc, without creating anything; NULL if none. */
static struct pcs *pcs_nolock(struct thread_cache *tc, struct sheaf_cache *c)
{
	if (!c->sheaf_capacity)
		return NULL;
	if (c->cls < NR_CLASSES)
		return &tc->pcs[c->cls];
	if (c->id < tc->nr_ext && tc->ext[c->id].cache == c)
		return &tc->ext[c->id];
	return NULL;
}

/* The calling thread's state if a handler may use its sheaves now. */
static struct thread_cache *tc_nolock(void)
{
	struct thread_cache *tc = sheaf_tc;
	if (!tc || tc->dead || tc->busy)
		return NULL;
	return tc;
}

static void *pop_nolock(struct sheaf_cache *c, struct pcs *pcs)
{
	struct sheaf *s = pcs->main;
	if (!s->size) {
		struct sheaf *spare = pcs->spare;
		if (spare && spare->size) {
			pcs->spare = s;
			pcs->main = s = spare;
		} else if (s != &sheaf_empty) {
			struct sheaf *full = barn_try_replace_empty(c, s);
			if (!full)
				return NULL;
			pcs->main = s = full;
		} else {
			return NULL;
		}
	}
	void *p = s->objects[--s->size];
	pcs->alloc_fast++;
	obj_mark_alloc(c, p);
	return p;
}

void *sheaf_malloc_nolock(size_t size)
{
	struct thread_cache *tc = tc_nolock();
	if (!tc || size > SMALL_MAX) {
		errno = EAGAIN;
		return NULL;
	}
	struct sheaf_cache *c = &kmalloc_caches[size_to_class(size)];
	tc->busy++;
	barrier();
	void *p = pop_nolock(c, &tc->pcs[c->cls]);
	barrier();
	tc->busy--;
	if (!p)
		errno = EAGAIN;
	return p;
}

static bool push_nolock(struct sheaf_cache *c, struct pcs *pcs, void *p)
{
	struct sheaf *s = pcs->main;
	if (s->size == s->capacity) {
		struct sheaf *spare = pcs->spare;
		if (spare && spare->size < spare->capacity) {
			pcs->spare = s;
			pcs->main = s = spare;
		} else if (s != &sheaf_empty) {
			struct sheaf *empty = barn_try_replace_full(c, s);
			if (!empty)
				return false;
			pcs->main = s = empty;
		} else {
			return false;
		}
	}
	obj_mark_free(c, p);
	s->objects[s->size] = p;
	barrier();
	s->size++;
	pcs->free_fast++;
	return true;
}

void sheaf_free_nolock(void *ptr)
{
	if (!ptr)
		return;
	const char *func = "sheaf_free_nolock()";
	uintptr_t e = pagemap_lookup((uintptr_t)ptr);
	if (e & PM_TAG_LARGE) {
		struct large *l = (struct large *)(e & ~PM_TAG_LARGE);
		if (l->state != LARGE_LIVE || (uintptr_t)ptr != l->user) {
			diag_bad_pointer(func, ptr, l->state != LARGE_LIVE ?
					 "double free of %p (large allocation)" :
					 "interior pointer %p in a large allocation", ptr);
			return;
		}
		nolock_defer(ptr, e);   /* unmapping takes locks: later */
		return;
	}
	struct slab *s = cache_check_free(func, e, ptr);
	if (!s)
		return;
	struct thread_cache *tc = tc_nolock();
	struct pcs *pcs = tc ? pcs_nolock(tc, s->cache) : NULL;
	if (pcs) {
		tc->busy++;
		barrier();
		bool done = push_nolock(s->cache, pcs, ptr);
		barrier();
		tc->busy--;
		if (done)
			return;
	}
	nolock_defer(ptr, e);
}
