/*
 * nolock.c - allocation and free from signal handlers (the kernel's
 * kmalloc_nolock() / kfree_nolock()).
 *
 * A handler may interrupt its own thread anywhere: inside malloc's inline
 * fast path, or a slow path holding a lock.  The fast paths carry no flag
 * (a store pair there cost a third of a malloc/free pair), so a handler
 * must never touch the thread's main or spare sheaves.  Instead each thread
 * has, per size class, a small *stash* sheaf that only handlers pop and
 * push.  The thread's own slow paths refill a stash that a handler found
 * empty (nolock_want), with nolock_refill set so that a handler arriving in
 * the middle keeps off.  Handlers nest (another signal inside a handler):
 * nolock_depth makes the inner one back off.
 *
 * When a handler cannot proceed:
 *   sheaf_malloc_nolock() returns NULL (errno EAGAIN);
 *   sheaf_free_nolock() defers the free: the object goes on a lock-free
 *   list (linked through its free-marker word, which free() writes anyway)
 *   that the next allocator slow path of any thread, or the rcu drain
 *   thread, frees normally.
 * Everything here is async-signal-safe in the POSIX sense: only atomics,
 * thread-local stores, write(2) (diagnostics) and abort().
 */
#include "fastpath.h"

#include <errno.h>

#define STASH_CAP 32   /* objects a stash holds (also in tiny builds) */
#define STASH_FILL 2   /* refill a stash to capacity / STASH_FILL */

void *nolock_deferred;
void (*sheaf_test_hook)(int point);

/*
 * A deferred free is marked free at once (so that a second free of it is
 * diagnosed, not followed), and linked through the word after the marker.
 * Objects with no such word (8-byte objects, constructed objects whose
 * marker sits in the one spare word) take a slot of a small static array
 * instead; should that be full, the object is leaked, never reused twice.
 * Large blocks are linked through their first word and their descriptor
 * says LARGE_DEFERRED.
 */
#define DEFER_SLOTS 1024
static void *defer_slots[DEFER_SLOTS];
unsigned int nolock_slots_used;   /* atomic: a hint for nolock_poll() */

static void **defer_link(void *p, uintptr_t e)
{
	if (e & PM_TAG_LARGE)
		return (void **)p;
	return (void **)p + 1;
}

static void free_deferred(void *p)
{
	uintptr_t e = pagemap_lookup((uintptr_t)p);
	if (e & PM_TAG_LARGE) {
		large_free((struct large *)(e & ~PM_TAG_LARGE));
		return;
	}
	/* Already validated and marked free by sheaf_free_nolock(); still
	 * allocated as far as its slab knows, so the slab is mapped. */
	sheaf_assert(e);
	cache_free_any(((struct slab *)e)->cache, p);
}

void nolock_process(void)
{
	void *p = __atomic_exchange_n(&nolock_deferred, NULL, __ATOMIC_ACQUIRE);
	while (p) {
		void **link = defer_link(p, pagemap_lookup((uintptr_t)p));
		void *next = link_decode(link, *(uintptr_t *)link);
		if (next && !pagemap_lookup((uintptr_t)next)) {
			/* Written over while on the list: the rest is lost
			 * (leaked), never followed into foreign memory. */
			diag_printf("sheaf: deferred free list corrupted at %p (a write into a freed block?); "
				    "the rest of the list is leaked\n", p);
			next = NULL;
		}
		free_deferred(p);
		p = next;
	}
	if (__atomic_load_n(&nolock_slots_used, __ATOMIC_ACQUIRE)) {
		for (unsigned int i = 0; i < DEFER_SLOTS; i++) {
			void *q = __atomic_exchange_n(&defer_slots[i], NULL, __ATOMIC_ACQUIRE);
			if (q) {
				__atomic_fetch_sub(&nolock_slots_used, 1, __ATOMIC_RELEASE);
				free_deferred(q);
			}
		}
	}
}

static void nolock_defer(void *p, uintptr_t e)
{
	if (e & PM_TAG_LARGE) {
		((struct large *)(e & ~PM_TAG_LARGE))->state = LARGE_DEFERRED;
	} else {
		struct sheaf_cache *c = ((struct slab *)e)->cache;
		if (c->marker_off || c->object_size < 2 * sizeof(void *)) {
			size_t h = ((uintptr_t)p >> 4) % DEFER_SLOTS;
			for (unsigned int i = 0; i < DEFER_SLOTS; i++) {
				void *expect = NULL;
				if (__atomic_compare_exchange_n(&defer_slots[(h + i) % DEFER_SLOTS], &expect, p,
								false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
					__atomic_fetch_add(&nolock_slots_used, 1, __ATOMIC_RELEASE);
					return;
				}
			}
			return;   /* no room: leaked, never handed out twice */
		}
		obj_mark_free(c, p);
	}
	void **link = defer_link(p, e);
	void *head = __atomic_load_n(&nolock_deferred, __ATOMIC_RELAXED);
	do
		*(uintptr_t *)link = link_encode(link, head);
	while (!__atomic_compare_exchange_n(&nolock_deferred, &head, p, true, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
}

/* ----------------------------------------------- the owner's side */
void nolock_refill(struct thread_cache *tc)
{
	uint64_t want = tc->nolock_want;
	tc->nolock_want = 0;   /* a hint: a bit set meanwhile is only a refill missed */
	tc->nolock_refill = 1;
	barrier();
	while (want) {
		unsigned int cls = (unsigned int)__builtin_ctzll(want);
		want &= want - 1;
		struct sheaf_cache *c = &kmalloc_caches[cls];
		struct sheaf *s = tc->nolock[cls];
		if (!s) {
			s = meta_alloc(sizeof(*s) + STASH_CAP * sizeof(void *));
			if (!s)
				continue;
			s->capacity = STASH_CAP;
			tc->nolock[cls] = s;
		}
		unsigned int target = s->capacity / STASH_FILL;
		if (s->size < target)
			s->size += cache_alloc_from_slabs(c, &c->node[tc->node], s->objects + s->size,
							  target - s->size, true);
	}
	barrier();
	tc->nolock_refill = 0;
}

void nolock_release(struct thread_cache *tc)
{
	tc->nolock_refill = 1;
	barrier();
	for (int i = 0; i < NR_CLASSES; i++) {
		struct sheaf *s = tc->nolock[i];
		if (s) {
			tc->nolock[i] = NULL;
			sheaf_flush(&kmalloc_caches[i], s);
			sheaf_delete(s);
		}
	}
}

/* ----------------------------------------------- the handler's side */
/* The calling thread's state if a handler may use its stashes now; the
 * caller must nolock_leave() it. */
static struct thread_cache *nolock_enter(void)
{
	struct thread_cache *tc = sheaf_tc;
	if (!tc || tc->dead)
		return NULL;
	if (tc->nolock_depth++ || tc->nolock_refill) {
		tc->nolock_depth--;
		return NULL;
	}
	barrier();
	return tc;
}

static void nolock_leave(struct thread_cache *tc)
{
	barrier();
	tc->nolock_depth--;
}

void *sheaf_malloc_nolock(size_t size)
{
	if (size > SMALL_MAX) {
		errno = EAGAIN;   /* large mappings need mmap and locks */
		return NULL;
	}
	struct thread_cache *tc = nolock_enter();
	if (!tc) {
		errno = EAGAIN;
		return NULL;
	}
	unsigned int cls = size_to_class(size);
	struct sheaf *s = tc->nolock[cls];
	void *p = NULL;
	if (s && s->size) {
		p = s->objects[--s->size];
		obj_mark_alloc(&kmalloc_caches[cls], p);
		stat(&kmalloc_caches[cls], alloc_slow);
	}
	if (!s || !s->size)
		tc->nolock_want |= 1ull << cls;   /* the thread refills it later */
	nolock_leave(tc);
	if (!p)
		errno = EAGAIN;
	return p;
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
	struct slab *slab = cache_check_free(func, e, ptr);
	if (!slab)
		return;
	struct sheaf_cache *c = slab->cache;
	struct thread_cache *tc = c->cls < NR_CLASSES ? nolock_enter() : NULL;
	if (tc) {
		struct sheaf *s = tc->nolock[c->cls];
		bool done = false;
		if (s && s->size < s->capacity) {
			obj_mark_free(c, ptr);
			s->objects[s->size++] = ptr;
			stat(c, free_slow);
			done = true;
		}
		nolock_leave(tc);
		if (done)
			return;
	}
	nolock_defer(ptr, e);
}
