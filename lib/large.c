/*
 * large.c - allocations above the largest size class (32 KiB).
 *
 * Each is a mapping of its own, page-aligned (or aligned as asked), with an
 * out-of-line descriptor and every page entered in the page map, so that a
 * free, an interior pointer or an rcu_free field address anywhere inside
 * resolves to it in O(1).
 *
 * mmap/munmap per allocation would make a malloc/free loop of, say, 1 MiB
 * two system calls and 256 page faults per iteration, so freed mappings up
 * to large_cache_max bytes are kept, up to large_cache bytes in all, and
 * reused best-fit when the mapping is at most twice the request (the whole
 * mapping is then usable, so a realloc that keeps growing stays in place).
 * The cache is binned by powers of two of the usable size, so a lookup
 * looks at two short lists, not at every cached mapping; one list through
 * all of them, most recent first, gives the oldest to evict when the cache
 * is over its bytes and when a mapping has been unused large_decay_ms
 * (glibc keeps such memory in its heap; jemalloc decays it the same way).
 * realloc grows and shrinks in place or moves with mremap: no copy; but a
 * shrink's cut-off pages become a cached mapping (large_cache_tail()) and a
 * block up to a MiB that outgrows its mapping moves into one at hand
 * (malloc.c), since touched pages cost less than fresh ones, each a fault.
 *
 * Page map entries are always cleared *before* a range is unmapped (or
 * mremap'd away), so a range another mapping reuses is never seen as ours.
 *
 * Secure mode: every mapping ends in a PROT_NONE page (l->guard), which an
 * overflow past the usable size hits; such blocks are resized by copy.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

static sheaf_lock_t large_lock = SHEAF_LOCK_INIT;
static struct large *lc_head, *lc_tail;   /* cache, most recent first */
#define LC_BINS 12                         /* 32 KiB << bin; the last: larger */
#define LC_SCAN 16                         /* entries looked at per bin */
static struct large *lc_bin[LC_BINS];
static size_t lc_bytes;
/* The decay clock, read every LC_TICK frees only: a clock read on every
 * free cost a malloc/free pair of 1 MiB 40% (a VM without a vDSO clock). */
#define LC_TICK 64
static uint32_t lc_now, lc_ticks;
static size_t live_count, live_bytes;     /* under large_lock, */
static uint64_t nr_allocs, nr_frees;      /* which every path takes anyway */

static bool large_register(struct large *l)
{
	return pagemap_set(l->base, l->map_bytes >> PAGE_SHIFT, (uintptr_t)l | PM_TAG_LARGE);
}

static void large_unregister(struct large *l)
{
	pagemap_set(l->base, l->map_bytes >> PAGE_SHIFT, 0);
}

static unsigned int lc_bin_of(size_t usable)
{
	unsigned int b = 63u - (unsigned int)__builtin_clzll(usable | 1);
	b = b < 15 ? 0 : b - 15;
	return b < LC_BINS ? b : LC_BINS - 1;
}

static void lc_link(struct large *l, uint32_t now)
{
	l->state = LARGE_CACHED;
	l->cached_ms = now;
	l->prev = NULL;
	l->next = lc_head;
	if (lc_head)
		lc_head->prev = l;
	else
		lc_tail = l;
	__atomic_store_n(&lc_head, l, __ATOMIC_RELAXED);
	l->bin = lc_bin_of(l->map_bytes - l->guard);
	struct large **bin = &lc_bin[l->bin];
	l->bprev = NULL;
	l->bnext = *bin;
	if (*bin)
		(*bin)->bprev = l;
	*bin = l;
	lc_bytes += l->map_bytes;
}

static void lc_unlink(struct large *l)
{
	if (l->bprev)
		l->bprev->bnext = l->bnext;
	else
		lc_bin[l->bin] = l->bnext;
	if (l->bnext)
		l->bnext->bprev = l->bprev;
	l->bnext = l->bprev = NULL;
	if (l->prev)
		l->prev->next = l->next;
	else
		__atomic_store_n(&lc_head, l->next, __ATOMIC_RELAXED);   /* read unlocked */
	if (l->next)
		l->next->prev = l->prev;
	else
		lc_tail = l->prev;
	l->next = l->prev = NULL;
	lc_bytes -= l->map_bytes;
}

static void large_destroy(struct large *l)
{
	large_unregister(l);
	page_unmap((void *)l->base, l->map_bytes);
	meta_free(l, sizeof(*l));
}

static void live_add(struct large *l)
{
	nr_allocs++;
	live_count++;
	live_bytes += l->map_bytes;
}

void *large_alloc(size_t size, size_t align, bool zero)
{
	return large_alloc_ex(size, align, zero, 0);
}

/* LA_GROW: the caller is a realloc making a block larger; a bigger cached
 * mapping is taken (the smallest that fits, within large_fits()'s bound),
 * since the block is likely to keep growing into it in place, which a
 * doubling realloc loop then does without a system call.  LA_CACHED_ONLY:
 * only a cached mapping, no new one (NULL, errno untouched, if none fits). */
void *large_alloc_ex(size_t size, size_t align, bool zero, unsigned int how)
{
	bool grow = how & LA_GROW;
	size_t bytes = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	if (bytes < size) {
		errno = ENOMEM;
		return NULL;
	}
	if (bytes == 0)
		bytes = PAGE_SIZE;   /* memalign(8192, 0): still a block of its own */
	size_t guard = sheaf_opt.secure ? PAGE_SIZE : 0;
	if (__atomic_load_n(&lc_head, __ATOMIC_RELAXED)) {
		struct large *best = NULL;
		lock_acquire(&large_lock);
		/* The most recently freed mapping first: a loop that frees
		 * and allocates one size finds it without a search. */
		struct large *mru = lc_head;
		size_t mru_have = mru ? mru->map_bytes - mru->guard : 0;
		if (mru && large_fits(mru_have, bytes, grow) &&
		    (align <= PAGE_SIZE || !(mru->base & (align - 1))))
			best = mru;
		/* Else a fit is at most twice the request: its bin or the
		 * next (a growing realloc takes a larger one: the smallest of
		 * the first bin that has one). */
		unsigned int b0 = lc_bin_of(bytes);
		unsigned int last = grow || b0 + 1 >= LC_BINS ? LC_BINS - 1 : b0 + 1;
		for (unsigned int b = b0; b <= last && !best; b++) {
			unsigned int seen = 0;
			for (struct large *l = lc_bin[b]; l && seen < LC_SCAN; l = l->bnext, seen++) {
				size_t have = l->map_bytes - l->guard;
				if (large_fits(have, bytes, grow) &&
				    (align <= PAGE_SIZE || !(l->base & (align - 1))) &&
				    (!best || l->map_bytes < best->map_bytes))
					best = l;
			}
		}
		if (best) {
			lc_unlink(best);
			best->state = LARGE_LIVE;
			best->user = best->base;
			best->req = size;
			live_add(best);
		}
		lock_release(&large_lock);
		if (best) {
			vg_alloc((void *)best->user, large_usable(best), false);
			if (zero)
				zero_block((void *)best->user, size);
			return (void *)best->user;
		}
	}
	if (how & LA_CACHED_ONLY)
		return NULL;

	struct large *l = meta_alloc(sizeof(*l));
	if (!l) {
		errno = ENOMEM;
		return NULL;
	}
	if (bytes + guard < bytes) {
		meta_free(l, sizeof(*l));
		errno = ENOMEM;
		return NULL;
	}
	void *p = page_map(bytes + guard, align);
	if (!p) {
		meta_free(l, sizeof(*l));
		return NULL;
	}
	l->base = l->user = (uintptr_t)p;
	l->map_bytes = bytes + guard;
	/* Without the guard (mprotect failed: out of mappings) the page is
	 * simply part of the block. */
	l->guard = guard && mprotect((char *)p + bytes, guard, PROT_NONE) == 0 ? (uint32_t)guard : 0;
	l->req = size;
	l->state = LARGE_LIVE;
	if (!large_register(l)) {
		page_unmap(p, bytes);
		meta_free(l, sizeof(*l));
		errno = ENOMEM;
		return NULL;
	}
	lock_acquire(&large_lock);
	live_add(l);
	lock_release(&large_lock);
	vg_alloc(p, large_usable(l), true);   /* usable size, as malloc_usable_size() says */
	return p;   /* fresh anonymous memory is zero */
}

/* Under large_lock: l into the cache if it may go there; returns what is
 * to be unmapped after the lock (l itself if not cached, and the oldest
 * entries while the cache is over its bytes or, when the clock moved,
 * unused too long), linked through ->next. */
static struct large *lc_add_locked(struct large *l)
{
	bool tick = lc_ticks++ % LC_TICK == 0;
	if (tick)
		lc_now = coarse_ms();
	uint32_t now = lc_now;
	struct large *evict = NULL;
	if (l->user == l->base && l->map_bytes <= sheaf_opt.large_cache_max &&
	    l->map_bytes <= sheaf_opt.large_cache) {
		lc_link(l, now);
	} else {
		l->state = 0;
		l->next = NULL;
		evict = l;
	}
	while (lc_tail && (lc_bytes > sheaf_opt.large_cache ||
			   (tick && ms_elapsed(now, lc_tail->cached_ms) >= sheaf_opt.large_decay_ms))) {
		struct large *old = lc_tail;
		lc_unlink(old);
		old->next = evict;
		evict = old;
	}
	return evict;
}

static void destroy_list(struct large *evict)
{
	while (evict) {
		struct large *next = evict->next;
		large_destroy(evict);
		evict = next;
	}
}

/* Into the shared cache (or unmapped).  `counted`: the free was already
 * counted (in a thread's large_slot_frees). */
static void large_put(struct large *l, bool counted)
{
	lock_acquire(&large_lock);
	test_hook(HOOK_LARGE_LOCKED);
	if (!counted)
		nr_frees++;
	live_count--;
	live_bytes -= l->map_bytes;
	struct large *evict = lc_add_locked(l);
	lock_release(&large_lock);
	destroy_list(evict);
}

/*
 * The pages [base, base + bytes) that a shrinking realloc cut off a
 * mapping, as a cached mapping of their own: the next large malloc or
 * growth takes them already touched, where unmapping them would cost a
 * system call (and, with other threads running, a TLB shoot-down) now and
 * a page fault per page for whoever maps memory next.  They stay part of
 * the kernel's mapping; the page map points them at their new descriptor.
 * False (nothing done) when no descriptor can be had.
 */
static bool large_cache_tail(uintptr_t base, size_t bytes)
{
	struct large *t = meta_alloc(sizeof(*t));
	if (!t)
		return false;
	t->base = t->user = base;
	t->map_bytes = bytes;
	t->guard = 0;
	t->req = 0;
	if (!large_register(t)) {
		meta_free(t, sizeof(*t));
		return false;
	}
	lock_acquire(&large_lock);
	struct large *evict = lc_add_locked(t);
	lock_release(&large_lock);
	destroy_list(evict);
	return true;
}

void large_free(struct large *l)
{
	vg_free((void *)l->user);
	large_put(l, false);
}

/*
 * The per-thread slot.  A loop that mallocs and frees one large size (a
 * buffer per request, say) then costs no lock and no list operation: the
 * block keeps its page-map entries and its place in the live counters
 * while it waits (large_stats() subtracts the slots), and its state says
 * LARGE_SLOT, so a second free of it is still a double free.  One block of
 * at most large_thread bytes per thread, the most recently freed; it goes
 * to the shared cache when a newer one replaces it, on malloc_trim() by the
 * thread and at thread exit.  The pop and push are inline (internal.h);
 * here: a block the slot pushed out goes to the shared cache.
 */
void large_slot_evict(struct large *l)
{
	large_put(l, true);
}

/* Folds the thread's slot counters into the shared ones. */
static void slot_fold(struct thread_cache *tc)
{
	lock_acquire(&large_lock);
	nr_allocs += tc->large_slot_allocs;
	nr_frees += tc->large_slot_frees;
	lock_release(&large_lock);
	__atomic_store_n(&tc->large_slot_allocs, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&tc->large_slot_frees, 0, __ATOMIC_RELAXED);
}

void large_slot_release(struct thread_cache *tc)
{
	struct large *l = tc->large_slot;
	large_slot_set(tc, NULL);
	if (l)
		large_put(l, true);
	slot_fold(tc);
}

/* A thread the fork child did not inherit may have stopped inside a slot
 * operation, so its block is left alone (leaked, and counted live, like
 * its sheaves); only its counters are kept. */
void large_slot_orphan(struct thread_cache *tc)
{
	large_slot_set(tc, NULL);
	slot_fold(tc);
}

void *large_realloc(struct large *l, size_t size)
{
	size_t bytes = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	if (bytes < size || l->user != l->base || sheaf_on_valgrind)
		return NULL;   /* aligned mappings (and memcheck's blocks) move by copy */
	if (l->guard) {
		/* In place within the mapping, its guard page staying where it
		 * is; beyond it, by copy. */
		if (bytes > l->map_bytes - l->guard)
			return NULL;
		l->req = size;
		return (void *)l->user;
	}
	size_t was = l->req;
	l->req = size;
	if (bytes == l->map_bytes)
		return (void *)l->user;
	if (bytes < l->map_bytes) {
		/* Cut the mapping only for a real shrink by half or more: a
		 * block growing inside a roomy mapping stays in place. */
		if (size >= was || bytes > l->map_bytes / 2)
			return (void *)l->user;
		size_t cut = l->map_bytes - bytes;
		lock_acquire(&large_lock);
		live_bytes -= cut;
		l->map_bytes = bytes;
		lock_release(&large_lock);
		if (!large_cache_tail(l->base + bytes, cut)) {
			pagemap_set(l->base + bytes, cut >> PAGE_SHIFT, 0);
			page_unmap((void *)(l->base + bytes), cut);
		}
		return (void *)l->user;
	}
	size_t old_bytes = l->map_bytes;
	large_unregister(l);
	void *q = page_remap((void *)l->base, old_bytes, bytes);
	if (!q) {
		large_register(l);
		return NULL;
	}
	l->base = l->user = (uintptr_t)q;
	l->map_bytes = bytes;
	if (!large_register(l)) {
		/* Cannot happen once the leaf exists for the old range; if it
		 * does, the block still works, only lookups fail. */
		diag_printf("sheaf: realloc(): page map full; block %p untracked\n", q);
	}
	lock_acquire(&large_lock);
	live_bytes += bytes - old_bytes;
	lock_release(&large_lock);
	return q;
}

bool large_trim(void)
{
	struct thread_cache *tc = sheaf_tc;   /* the caller's slot goes too */
	if (tc && !tc->dead)
		large_slot_release(tc);
	lock_acquire(&large_lock);
	struct large *list = lc_head;
	__atomic_store_n(&lc_head, NULL, __ATOMIC_RELAXED);
	lc_tail = NULL;
	lc_bytes = 0;
	for (unsigned int b = 0; b < LC_BINS; b++)
		lc_bin[b] = NULL;
	lock_release(&large_lock);
	bool any = list != NULL;
	while (list) {
		struct large *next = list->next;
		large_destroy(list);
		list = next;
	}
	return any;
}

struct slot_sum {
	size_t count, bytes;
	uint64_t allocs, frees;
};

static void slot_sum(struct thread_cache *tc, void *arg)
{
	struct slot_sum *sum = arg;
	size_t b = __atomic_load_n(&tc->large_slot_bytes, __ATOMIC_RELAXED);
	sum->count += b != 0;
	sum->bytes += b;
	sum->allocs += __atomic_load_n(&tc->large_slot_allocs, __ATOMIC_RELAXED);
	sum->frees += __atomic_load_n(&tc->large_slot_frees, __ATOMIC_RELAXED);
}

void large_stats(size_t *live, size_t *lbytes, size_t *cached_bytes, uint64_t *allocs,
		 uint64_t *frees)
{
	struct slot_sum sum = { 0, 0, 0, 0 };
	threads_foreach(slot_sum, &sum);
	lock_acquire(&large_lock);
	/* A block in a slot is free but still in the live counters. */
	*live = live_count - (sum.count < live_count ? sum.count : live_count);
	*lbytes = live_bytes - (sum.bytes < live_bytes ? sum.bytes : live_bytes);
	*cached_bytes = lc_bytes + sum.bytes;
	*allocs = nr_allocs + sum.allocs;
	*frees = nr_frees + sum.frees;
	lock_release(&large_lock);
}

void large_fork_prepare(void) { lock_acquire(&large_lock); }
void large_fork_parent(void) { lock_release(&large_lock); }
void large_fork_child(void) { lock_reinit(&large_lock); }
