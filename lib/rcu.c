/*
 * rcu.c - rcu_free(): free after a grace period, batched per thread.
 *
 * The kernel's kfree_rcu() with sheaves (see the seeds), in user space on
 * liburcu-qsbr:
 *
 *   rcu_free(obj)  ->  the thread's rcu_free sheaf for obj's cache
 *                       (pcs->rcu_free; one pointer stored, the object is
 *                       not written: readers may still be reading it)
 *                  ->  when full: pushed on a lock-free hand-off stack
 *   drain thread   ->  takes every handed-off sheaf at once, waits ONE grace
 *                       period for the whole batch, then gives each sheaf to
 *                       its cache's barn as a full sheaf (it serves
 *                       allocations directly) or flushes it to the slabs.
 *
 * Objects that have no rcu sheaf (large allocations, caches without
 * sheaves, a failed sheaf allocation) go into a per-thread pointer array
 * (tc->rcu_array) handed off the same way; without even that, they are
 * linked through their rcu_head/rcu_ptr field on a lock-free list, and the
 * drain thread recomputes each object's start from the field's address
 * through the page map (any field offset works).
 *
 * Partly filled sheaves and arrays are stolen by the drain thread after
 * rcu_delay_ms, or at once by a barrier.  Ownership of a thread's slot is
 * passed by atomic exchange: the owner swaps in RCU_CLAIMED while it
 * pushes, the thief swaps in NULL, so exactly one of them holds the sheaf.
 * A thief that finds RCU_CLAIMED waits for the owner's few instructions.
 *
 * The drain thread starts on the first deferred free and sleeps on a futex
 * when idle (no periodic wake-ups); a barrier in a process that never
 * deferred anything returns at once and starts nothing.  It does not
 * register with liburcu: it reads no RCU-protected data, and
 * synchronize_rcu() may be called from an unregistered thread.
 */
#include "fastpath.h"

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-qsbr.h>

#include "sheaf/rcu.h"

#define RCU_ARRAY_CAP 126   /* pointer array: one 1 KiB meta block */

/* The field of an object linked for lack of memory: the next one's field,
 * encoded (link_encode(): the object is still readable, and writable by a
 * buggy program, until its grace period ends). */
struct rcu_link {
	uintptr_t next;
};

/* Hand-off stacks: producers push with CAS, the drain thread takes all
 * with one exchange (so no ABA problem). */
static struct sheaf *handoff_sheaves;
static struct rcu_link *handoff_links;
static uint64_t links_pushed, links_taken;  /* bound a list walk: catches cycles */

/* Counters (relaxed atomics). */
static uint64_t rcu_pending_objs, rcu_gp_count, rcu_freed_objs, rcu_fallback_count;
static int dirty_threads;                   /* threads with partial sheaves */

/*
 * Set, and never cleared, before the first object of the process is
 * deferred by any path: a new rcu sheaf or pointer array (mark_dirty()),
 * a hand-off (full sheaves, field links, rcu_free_nolock() from a handler
 * while no drain thread exists) and a tiny build's call_rcu().  Until then
 * a barrier has nothing to wait for.  A fork child inherits it together
 * with the parent's hand-off stacks.
 */
static int rcu_deferred_ever;

static void note_deferred(void)
{
	if (!__atomic_load_n(&rcu_deferred_ever, __ATOMIC_RELAXED))
		__atomic_store_n(&rcu_deferred_ever, 1, __ATOMIC_RELEASE);
}

/* Drain thread. */
static sheaf_lock_t drain_lock = SHEAF_LOCK_INIT;  /* start/stop only */
static int drain_running;
static pthread_t drain_tid;
static int drain_kick;          /* futex word: bumped to wake the thread */
static int drain_idle;          /* the thread sleeps without a timeout */
static uint64_t drain_req;      /* barrier tickets handed out */
static uint64_t drain_done;     /* tickets whose batch is freed (futex: low 32 bits) */
static int drain_stop;
static int drain_no_start;      /* inside the fork child handler */
static int fork_child;          /* grace periods may never end here */

static long futex(int *uaddr, int op, int val, const struct timespec *ts)
{
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static void drain_wake(void)
{
	__atomic_fetch_add(&drain_kick, 1, __ATOMIC_SEQ_CST);
	futex(&drain_kick, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static bool drain_start(void);

/* Set by signal handlers that queued work while no drain thread ran: the
 * next allocator slow path starts it (nolock_poll()). */
int rcu_start_pending;

/* Work was queued: the drain thread must look at it within rcu_delay_ms,
 * or at once when `urgent`.  From a signal handler (`nolock`) it can only
 * be woken, not started. */
static void drain_notify(bool urgent, bool nolock)
{
	if (!__atomic_load_n(&drain_running, __ATOMIC_ACQUIRE)) {
		if (nolock || __atomic_load_n(&drain_no_start, __ATOMIC_RELAXED)) {
			__atomic_store_n(&rcu_start_pending, 1, __ATOMIC_RELEASE);
			return;
		}
		if (!drain_start())
			return;
	}
	if (urgent || __atomic_load_n(&drain_idle, __ATOMIC_SEQ_CST))
		drain_wake();
}

/* ---------------------------------------------------------- hand-off */
/*
 * Whether adding `n` made `p` objects pending reach rcu_batch: the one
 * hand-off that must wake the drain thread out of its delay.  Later ones
 * need not: the thread checks the count (urgent()) before every timed
 * wait, so while the batch is over the bound it does not sleep, and a
 * futex wake per hand-off - per object for linked ones - cost 2 updaters
 * of rcu_free_nolock() more than the rest of their work (bench_sheaf).
 */
static bool batch_crossed(uint64_t p, uint64_t n)
{
	return p >= sheaf_opt.rcu_batch && p - n < sheaf_opt.rcu_batch;
}

static void handoff_sheaf_ctx(struct sheaf *s, bool nolock)
{
	/* Counted before it is published: once on the stack the sheaf may be
	 * processed, recycled and reused by the drain thread at once. */
	note_deferred();
	uint32_t n = s->size;
	uint64_t p = __atomic_add_fetch(&rcu_pending_objs, n, __ATOMIC_RELAXED);
	struct sheaf *head = __atomic_load_n(&handoff_sheaves, __ATOMIC_RELAXED);
	do
		s->next = head;
	while (!__atomic_compare_exchange_n(&handoff_sheaves, &head, s, true, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
	drain_notify(batch_crossed(p, n), nolock);
}

static void handoff_sheaf(struct sheaf *s)
{
	handoff_sheaf_ctx(s, false);
}

static void handoff_link_ctx(struct rcu_link *l, bool nolock)
{
	/* Counted before it is visible, so that a walk's bound is never
	 * short of the list it walks. */
	note_deferred();
	__atomic_fetch_add(&links_pushed, 1, __ATOMIC_RELEASE);
	__atomic_fetch_add(&rcu_fallback_count, 1, __ATOMIC_RELAXED);
	uint64_t p = __atomic_add_fetch(&rcu_pending_objs, 1, __ATOMIC_RELAXED);
	struct rcu_link *head = __atomic_load_n(&handoff_links, __ATOMIC_RELAXED);
	do
		l->next = link_encode(l, head);
	while (!__atomic_compare_exchange_n(&handoff_links, &head, l, true, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
	drain_notify(batch_crossed(p, 1), nolock);
}

static void handoff_link(struct rcu_link *l)
{
	handoff_link_ctx(l, false);
}

/* ------------------------------------------------------ per-thread slot */
static struct sheaf *rcu_array_new(void)
{
	struct sheaf *s = meta_alloc(sizeof(struct sheaf) + RCU_ARRAY_CAP * sizeof(void *));
	if (s)
		s->capacity = RCU_ARRAY_CAP;
	return s;
}

/* `dirty`: the owning thread's rcu_dirty. */
static void mark_dirty(int *dirty)
{
	note_deferred();
	if (!__atomic_exchange_n(dirty, 1, __ATOMIC_RELAXED))
		__atomic_fetch_add(&dirty_threads, 1, __ATOMIC_RELAXED);
}

/*
 * Pushes obj into the sheaf in *slot (a fresh one if empty): false when no
 * sheaf can be had, or when the slot is claimed already (a signal handler
 * that interrupted its owner; in a tiny build, another thread).  c == NULL:
 * a pointer array.  `dirty` is the flag of the slot's owner (mark_dirty()).
 */
static bool slot_push(int *dirty, struct sheaf **slot, struct sheaf_cache *c, void *obj)
{
	struct sheaf *s = __atomic_exchange_n(slot, RCU_CLAIMED, __ATOMIC_ACQUIRE);
	if (unlikely(s == RCU_CLAIMED))
		return false;
	test_hook(HOOK_RCU_CLAIMED);
	if (!s) {
		s = c ? barn_get_empty(c, cache_home(c)) : NULL;
		if (!s)
			s = c ? sheaf_new(c) : rcu_array_new();
		if (!s) {
			__atomic_store_n(slot, NULL, __ATOMIC_RELEASE);
			return false;
		}
		s->cache = c;
	}
	/* The first object makes the thread dirty (the sheaf may be an
	 * empty one that rcu_provision() put in the slot). */
	if (!s->size)
		mark_dirty(dirty);
	s->objects[s->size++] = obj;
	if (s->size == s->capacity) {
		__atomic_store_n(slot, NULL, __ATOMIC_RELEASE);
		handoff_sheaf(s);
	} else {
		/* Read before publishing: once in the slot, the sheaf may be
		 * stolen, processed and freed by the drain thread. */
		bool first = s->size == 1;
		__atomic_store_n(slot, s, __ATOMIC_RELEASE);
		/* A new partial sheaf: the drain thread must come for it after
		 * rcu_delay_ms even if this thread never fills it. */
		if (first)
			drain_notify(false, false);
	}
	return true;
}

/* Takes the sheaf out of a slot whose owner may be pushing right now. */
static struct sheaf *slot_steal(struct sheaf **slot)
{
	for (;;) {
		struct sheaf *s = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
		if (!s)
			return NULL;
		if (s == RCU_CLAIMED) {
			/* In a fork child the owner may be a thread that no
			 * longer exists: its sheaf is lost (never freed early). */
			if (__atomic_load_n(&drain_no_start, __ATOMIC_RELAXED))
				return NULL;
			sched_yield();   /* the owner is inside slot_push() */
			continue;
		}
		if (__atomic_compare_exchange_n(slot, &s, NULL, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return s;
	}
}

/* `node`: the slot owner's home, where an empty sheaf goes back. */
static void steal_slot(struct sheaf **slot, unsigned int node)
{
	struct sheaf *s = slot_steal(slot);
	if (s) {
		if (s->size)
			handoff_sheaf(s);
		else if (s->cache)
			barn_put_empty(s->cache, &s->cache->node[node], s);
		else
			sheaf_delete(s);
	}
}

/* Hands off every partial sheaf of `tc` (of cache `only`, or all). */
static void steal_thread(struct thread_cache *tc, struct sheaf_cache *only)
{
	unsigned int node = tc->node;
	if (only) {
		if (only->cls < NR_CLASSES)
			steal_slot(&tc->pcs[only->cls].rcu_free, node);
		else if (only->id < tc->nr_ext && tc->ext[only->id].cache == only)
			steal_slot(&tc->ext[only->id].rcu_free, node);
		steal_slot(&tc->rcu_array, node);  /* may hold objects of `only` */
		return;
	}
	if (__atomic_exchange_n(&tc->rcu_dirty, 0, __ATOMIC_RELAXED))
		__atomic_fetch_sub(&dirty_threads, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < NR_CLASSES; i++)
		steal_slot(&tc->pcs[i].rcu_free, node);
	for (unsigned int i = 0; i < tc->nr_ext; i++)
		steal_slot(&tc->ext[i].rcu_free, node);
	steal_slot(&tc->rcu_array, node);
}

static void steal_all_cb(struct thread_cache *tc, void *arg)
{
	/* A thread that is not dirty has no partial sheaf anywhere: it sets
	 * the flag before it publishes a new one. */
	if (arg || __atomic_load_n(&tc->rcu_dirty, __ATOMIC_ACQUIRE))
		steal_thread(tc, arg);
}

void rcu_thread_exit(struct thread_cache *tc)
{
	steal_thread(tc, NULL);
}

/* ------------------------------------------------------------- freeing */
void rcu_note_duplicates(unsigned int n)
{
	if (n)
		__atomic_fetch_sub(&rcu_freed_objs, n, __ATOMIC_RELAXED);
}

void rcu_free_now(void *obj)
{
	do_free_slow(obj, pagemap_lookup((uintptr_t)obj), "rcu_free()");
}

/*
 * Whether free() would free `obj` now: the start of a live object.  The
 * checks of do_free_slow() and of a debugged cache's free (whose exact
 * test is the slab bitmap), made without a diagnostic.  False for an
 * object rcu_free()'d twice, whose second copy finds it freed already.
 */
static bool obj_freeable(void *obj)
{
	uintptr_t e = pagemap_lookup((uintptr_t)obj);
	if (!e)
		return false;
	if (e & PM_TAG_LARGE) {
		const struct large *l = (const struct large *)(e & ~PM_TAG_LARGE);
		return l->state == LARGE_LIVE && l->user == (uintptr_t)obj;
	}
	struct slab *s = (struct slab *)e;
	struct sheaf_cache *c = s->cache;
	uint32_t idx = slab_index(s, (uintptr_t)obj);
	if ((uintptr_t)obj < s->base + c->obj_offset || idx >= s->objects ||
	    s->base + (uintptr_t)idx * s->size + c->obj_offset != (uintptr_t)obj ||
	    obj_marked_free(c, obj))
		return false;
	if (!c->debug)
		return true;
	lock_acquire(&slab_node(s)->lock);
	bool free_already = slab_obj_is_free(s, idx);
	lock_release(&slab_node(s)->lock);
	return !free_already;
}

/* Frees an object whose grace period is over (diagnosed if it is not
 * live); true when it was freed: only those count in rcu_objects_freed. */
static bool rcu_free_counted(void *obj)
{
	bool ok = obj_freeable(obj);
	rcu_free_now(obj);
	return ok;
}

/* The object an rcu field belongs to (for linked objects). */
static void *object_of_field(void *field)
{
	uintptr_t e = pagemap_lookup((uintptr_t)field);
	if (!e)
		return NULL;
	if (e & PM_TAG_LARGE)
		return (void *)((struct large *)(e & ~PM_TAG_LARGE))->user;
	struct slab *s = (struct slab *)e;
	return (void *)(s->base + (uintptr_t)slab_index(s, (uintptr_t)field) * s->size);
}

/* Frees a sheaf's objects; returns how many were freed (duplicates are
 * diagnosed, not counted). */
static uint64_t process_sheaf(struct sheaf *s)
{
	struct sheaf_cache *c = s->cache;
	if (!c) {
		uint64_t freed = 0;
		for (uint32_t i = 0; i < s->size; i++)
			freed += rcu_free_counted(s->objects[i]);
		sheaf_delete(s);
		return freed;
	}
	/*
	 * The grace period is over: the objects may be written now, and they
	 * are free.  A full sheaf goes to the barn as it is, the kernel's
	 * rcu sheaf: the thread that takes it writes the free markers
	 * (sheaf_settle()), on the core that will allocate the objects.
	 * Written here, every marker moved a line to this thread's core and
	 * back: 58 -> 18 ns per rcu_free() with one updater on a 2-core VM.
	 * The barn is the objects' node's, where the thread that allocated
	 * them looks first.  A partial sheaf is settled (double frees found
	 * now, during a barrier) and flushed.
	 */
	uint32_t k = s->size;
	stat_add(c, SHEAF_STAT_free_slow, k);
	s->unsettled = true;
	struct cache_node *n = sheaf_node(c, s);
	if (k == s->capacity && barn_put_full(c, n, s)) {
		stat(c, rcu_sheaf_barn);
		return k;
	}
	k -= sheaf_settle(c, s);
	sheaf_flush(c, s);
	stat(c, rcu_sheaf_flush);
	barn_put_empty(c, n, s);
	return k;
}

/* Frees a list of linked objects: how many were taken off the hand-off
 * list (`*taken`, what pending drops by) and, the return value, how many
 * were freed. */
static uint64_t process_links(struct rcu_link *l, uint64_t bound, uint64_t *taken)
{
	uint64_t n = 0, freed = 0;
	while (l) {
		if (n == bound) {
			diag_bad_pointer("rcu_free()", l,
					 "the deferred list loops at %p: an object was rcu_free()'d twice; "
					 "the rest of the list is leaked", (void *)l);
			break;
		}
		struct rcu_link *next = link_decode(l, l->next);   /* before the free reuses it */
		if (next && !pagemap_lookup((uintptr_t)next)) {
			diag_bad_pointer("rcu_free()", l,
					 "the deferred list is corrupted at %p (the object was written after "
					 "rcu_free()); the rest of the list is leaked", (void *)l);
			next = NULL;
		}
		void *obj = object_of_field(l);
		if (obj)
			freed += rcu_free_counted(obj);
		n++;
		l = next;
	}
	*taken = n;
	return freed;
}

/* One batch: take everything handed off, one grace period, free it all. */
static void drain_cycle(bool steal)
{
	nolock_poll();   /* frees deferred by signal handlers */
	if (steal)
		threads_foreach(steal_all_cb, NULL);
	struct sheaf *sheaves = __atomic_exchange_n(&handoff_sheaves, NULL, __ATOMIC_ACQUIRE);
	struct rcu_link *links = __atomic_exchange_n(&handoff_links, NULL, __ATOMIC_ACQUIRE);
	if (!sheaves && !links)
		return;
	uint64_t bound = __atomic_load_n(&links_pushed, __ATOMIC_ACQUIRE) - links_taken;

	urcu_qsbr_synchronize_rcu();
	__atomic_fetch_add(&rcu_gp_count, 1, __ATOMIC_RELAXED);

	uint64_t n = 0, freed = 0, nl;
	while (sheaves) {
		struct sheaf *next = sheaves->next;
		n += sheaves->size;   /* what handoff_sheaf() added to pending */
		freed += process_sheaf(sheaves);
		sheaves = next;
	}
	freed += process_links(links, bound, &nl);
	links_taken += nl;
	n += nl;
	__atomic_fetch_sub(&rcu_pending_objs, n, __ATOMIC_RELAXED);
	__atomic_fetch_add(&rcu_freed_objs, freed, __ATOMIC_RELAXED);
}

static bool work_queued(void)
{
	return __atomic_load_n(&handoff_sheaves, __ATOMIC_SEQ_CST) ||
	       __atomic_load_n(&handoff_links, __ATOMIC_SEQ_CST) ||
	       __atomic_load_n(&dirty_threads, __ATOMIC_SEQ_CST) ||
	       __atomic_load_n(&drain_req, __ATOMIC_SEQ_CST) !=
		       __atomic_load_n(&drain_done, __ATOMIC_SEQ_CST);
}

static bool urgent(void)
{
	return __atomic_load_n(&drain_stop, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&drain_req, __ATOMIC_ACQUIRE) !=
		       __atomic_load_n(&drain_done, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&rcu_pending_objs, __ATOMIC_RELAXED) >= sheaf_opt.rcu_batch;
}

static void *drain_main(void *arg)
{
	(void)arg;
	thread_set_background();
	uint32_t last_steal = coarse_ms();
	while (!__atomic_load_n(&drain_stop, __ATOMIC_ACQUIRE)) {
		int kick = __atomic_load_n(&drain_kick, __ATOMIC_SEQ_CST);
		if (!work_queued()) {
			/* Idle: say so before the last look, so that a producer
			 * that queues after it sees drain_idle and wakes us. */
			__atomic_store_n(&drain_idle, 1, __ATOMIC_SEQ_CST);
			if (!work_queued())
				futex(&drain_kick, FUTEX_WAIT_PRIVATE, kick, NULL);
			__atomic_store_n(&drain_idle, 0, __ATOMIC_SEQ_CST);
			continue;
		}
		bool timed = !urgent();
		if (timed) {
			/* Let a batch build up, unless it fills or a barrier
			 * comes first (both kick). */
			struct timespec ts = { sheaf_opt.rcu_delay_ms / 1000,
					       (long)(sheaf_opt.rcu_delay_ms % 1000) * 1000000L };
			kick = __atomic_load_n(&drain_kick, __ATOMIC_SEQ_CST);
			if (!urgent())
				futex(&drain_kick, FUTEX_WAIT_PRIVATE, kick, &ts);
		}
		uint64_t req = __atomic_load_n(&drain_req, __ATOMIC_ACQUIRE);
		/* After the delay, partly filled sheaves go too, so nothing
		 * waits much longer than rcu_delay_ms plus a grace period.
		 * Barriers steal what they need themselves (so a per-cache
		 * barrier costs threads, not threads x caches), and one that
		 * cut the delay short is served without that steal, which
		 * the next cycle makes: else the barrier of one cache would
		 * wait for the partial sheaves of every cache in every thread
		 * (1.4 ms at 1000 caches x 8 threads, bench_sheaf).  Not for
		 * long: a stream of barriers must not hold partial sheaves
		 * back for more than twice the delay. */
		bool barrier = req != __atomic_load_n(&drain_done, __ATOMIC_ACQUIRE);
		uint32_t now = coarse_ms();
		bool steal = timed && (!barrier || now - last_steal >= 2 * sheaf_opt.rcu_delay_ms);
		if (steal)
			last_steal = now;
		drain_cycle(steal);
		__atomic_store_n(&drain_done, req, __ATOMIC_RELEASE);
		futex((int *)&drain_done, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL);
	}
	return NULL;
}

static bool drain_start(void)
{
	bool ok;
	lock_acquire(&drain_lock);
	if (!drain_running) {
		/* The drain thread must not take the program's signals. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		/*
		 * A stack of our own, not one from glibc's cache: in a fork
		 * child that cache holds the stacks - and TLS - of the
		 * parent's other threads, whose liburcu reader records are
		 * still on the registry that synchronize_rcu() walks; reusing
		 * one would corrupt that list.
		 */
		pthread_attr_t attr;
		int err = pthread_attr_init(&attr);
		size_t stack_bytes = (size_t)256 << 10;
		void *stack = mmap(NULL, stack_bytes, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (stack == MAP_FAILED)
			err = ENOMEM;
		else if (!err)
			err = pthread_attr_setstack(&attr, stack, stack_bytes);
		if (!err)
			err = pthread_create(&drain_tid, &attr, drain_main, NULL);
		if (err && stack != MAP_FAILED)
			munmap(stack, stack_bytes);
		pthread_attr_destroy(&attr);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (err == 0) {
			pthread_setname_np(drain_tid, "sheaf-rcu");
			__atomic_store_n(&drain_running, 1, __ATOMIC_RELEASE);
		}
	}
	ok = drain_running;
	lock_release(&drain_lock);
	return ok;
}

/* Asks the thread's next slow path for an empty rcu sheaf of c's class
 * (atomic: a handler may set a bit while its thread is in rcu_provision()). */
static void rcu_want(struct thread_cache *tc, struct sheaf_cache *c)
{
	if (c->cls < NR_CLASSES)
		__atomic_fetch_or(&tc->rcu_want, 1ull << c->cls, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------- the API */
static void rcu_tiny_callback(struct rcu_head *head);

static void rcu_queue(void *obj, void *field, uintptr_t e)
{
	struct thread_cache *tc = config_tiny ? NULL : sheaf_tc;
	if (!config_tiny && unlikely(!tc || tc->dead))
		tc = thread_cache_get();   /* creates it; NULL while exiting */

	if (tc && !(e & PM_TAG_LARGE)) {
		struct sheaf_cache *c = ((struct slab *)e)->cache;
		struct pcs *pcs = !c->sheaf_capacity ? NULL :
				  c->cls < NR_CLASSES ? &tc->pcs[c->cls] : thread_ext_pcs(tc, c);
		if (pcs && slot_push(&tc->rcu_dirty, &pcs->rcu_free, c, obj)) {
			__atomic_store_n(&pcs->rcu_sheaf, pcs->rcu_sheaf + 1, __ATOMIC_RELAXED);
			return;
		}
		stat(c, free_rcu_sheaf_fail);
	}
	if (tc && slot_push(&tc->rcu_dirty, &tc->rcu_array, NULL, obj))
		return;

	if (config_tiny && field && urcu_qsbr_read_ongoing()) {
		/* One call_rcu() per object, from a registered online thread
		 * as liburcu requires; its callback finds the object from the
		 * field like the drain thread does. */
		note_deferred();
		urcu_qsbr_call_rcu((struct rcu_head *)field, rcu_tiny_callback);
		return;
	}
	if (field) {
		handoff_link((struct rcu_link *)field);
		return;
	}
	/* rcu_free_mightsleep() with no memory for an array, or in a tiny
	 * build (no batching, as the kernel's KVFREE_RCU_BATCHED=n): wait
	 * here. */
	urcu_qsbr_synchronize_rcu();
	if (rcu_free_counted(obj))
		__atomic_fetch_add(&rcu_freed_objs, 1, __ATOMIC_RELAXED);
}

static void rcu_tiny_callback(struct rcu_head *head)
{
	void *obj = object_of_field(head);
	if (obj && rcu_free_counted(obj))
		__atomic_fetch_add(&rcu_freed_objs, 1, __ATOMIC_RELAXED);
}

/* Checks that `obj` is the start of a live object and `field` inside it. */
static bool rcu_check(void *obj, void *field, const char *func, uintptr_t *entry)
{
	uintptr_t e = pagemap_lookup((uintptr_t)obj);
	size_t size;
	if (e & PM_TAG_LARGE) {
		struct large *l = (struct large *)(e & ~PM_TAG_LARGE);
		if (l->state != LARGE_LIVE) {
			diag_bad_pointer(func, obj, "pointer %p was already freed (large allocation)", obj);
			return false;
		}
		if ((uintptr_t)obj != l->user) {
			diag_bad_pointer(func, obj, "interior pointer %p: large allocation %p + %lu", obj,
					 (void *)l->user, (unsigned long)((uintptr_t)obj - l->user));
			return false;
		}
		size = large_usable(l);
	} else {
		/* Not ours, interior, or already free (read-only check: the
		 * object may still be read by RCU readers). */
		struct slab *s = cache_check_free(func, e, obj);
		if (!s)
			return false;
		e = (uintptr_t)s;   /* the same entry, known to be a slab */
		size = s->cache->object_size;
	}
	if (field && ((uintptr_t)field < (uintptr_t)obj ||
		      (uintptr_t)field - (uintptr_t)obj + sizeof(void *) > size)) {
		diag_bad_pointer(func, obj, "field %p is not inside the object %p (%zu bytes)", field,
				 obj, size);
		return false;
	}
	*entry = e;
	return true;
}

static noinline void rcu_free_slow(void *obj, void *field, const char *func)
{
	if (!obj)
		return;
	if (unlikely(!__atomic_load_n(&sheaf_ready, __ATOMIC_ACQUIRE)))
		sheaf_init();
	uintptr_t e;
	if (rcu_check(obj, field, func, &e))
		rcu_queue(obj, field, e);
}

/*
 * The fast path: a live object of a size class, its field (if any) inside
 * it, and the thread's rcu_free sheaf of that class in its slot, neither
 * empty nor left full by this object (the first object, or the last, is the
 * slow path's: dirty mark and drain thread notice, hand-off).  free_fast()'s
 * checks, read-only (readers may still read the object), one slot claim;
 * false leaves everything else, diagnostics included, to the slow path.
 * Async-signal-safe, so rcu_free_nolock() uses it too: a handler that
 * interrupts its thread inside the claim finds RCU_CLAIMED and takes the
 * slow path.  (One that interrupts the counter's two-instruction increment
 * may lose its own count: a statistic, not worth a locked add.)
 */
static inline __attribute__((always_inline)) bool rcu_free_fast(void *obj, void *field)
{
	uintptr_t e = pagemap_entry((uintptr_t)obj), cls = pm_class(e);
	struct thread_cache *tc = sheaf_tc;
	/* (With a test hook set, the slow path's slot_push() calls it.) */
	if (likely(tc && cls < NR_CLASSES && !tc->dead && !sheaf_test_hook)) {
		const struct class_free_info *k = &class_free_info[cls];
		uint64_t idx = pm_class_index(e, cls, obj);
		if (likely(idx < k->objects &&
			   (!field || (uintptr_t)field - (uintptr_t)obj <= k->size - sizeof(void *)) &&
			   (!config_harden || !marker_maybe_free(pm_class_marker(e, cls, obj, idx), obj)))) {
			struct pcs *pcs = &tc->pcs[cls];
			struct sheaf *s = __atomic_exchange_n(&pcs->rcu_free, RCU_CLAIMED, __ATOMIC_ACQUIRE);
			if (likely(s != RCU_CLAIMED)) {
				/* 1 <= size <= capacity - 2, in one compare */
				bool room = s && s->size - 1 < s->capacity - 2;
				if (likely(room))
					s->objects[s->size++] = obj;
				__atomic_store_n(&pcs->rcu_free, s, __ATOMIC_RELEASE);
				if (likely(room)) {
					__atomic_store_n(&pcs->rcu_sheaf, pcs->rcu_sheaf + 1, __ATOMIC_RELAXED);
					return true;
				}
			}
		}
	}
	return false;
}

void sheaf_rcu_free_field(void *obj, void *field, const char *func)
{
	if (likely(rcu_free_fast(obj, field)))
		return;
	rcu_free_slow(obj, field, func);
}

/*
 * rcu_free_nolock(): as rcu_free(), from a signal handler.  Only an rcu
 * sheaf that exists, is not claimed by the interrupted code and has room is
 * used, or an empty one from the barn if its lock is free; otherwise the
 * object is linked through its field.  Nothing here allocates, locks or
 * starts a thread.  So that the next call need not link, a slot this call
 * leaves empty is noted in tc->rcu_want, and the thread's next allocator
 * slow path puts an empty sheaf there (rcu_provision()).
 */
static void rcu_free_nolock_slow(void *obj, void *field)
{
	const char *func = "rcu_free_nolock()";
	uintptr_t e;
	if (!__atomic_load_n(&sheaf_ready, __ATOMIC_ACQUIRE)) {
		diag_bad_pointer(func, obj, "invalid pointer %p: not allocated by sheaf", obj);
		return;
	}
	if (!rcu_check(obj, field, func, &e))
		return;
	struct thread_cache *tc = sheaf_tc;
	if (!config_tiny && tc && !tc->dead && !(e & PM_TAG_LARGE)) {
		struct sheaf_cache *c = ((struct slab *)e)->cache;
		struct pcs *pcs = NULL;
		if (c->sheaf_capacity)
			pcs = c->cls < NR_CLASSES ? &tc->pcs[c->cls] :
			      (!tc->busy && c->id < tc->nr_ext && tc->ext[c->id].cache == c) ?
			      &tc->ext[c->id] : NULL;
		struct sheaf **slot = pcs ? &pcs->rcu_free : NULL;
		struct sheaf *s = slot ? __atomic_exchange_n(slot, RCU_CLAIMED, __ATOMIC_ACQUIRE) : NULL;
		if (!s && slot) {
			/* An empty sheaf from the barn, if its lock is free:
			 * taking one never blocks and allocates nothing. */
			s = barn_try_get_empty(c, &c->node[tc->node]);
			if (s)
				s->cache = c;
		}
		if (s && s != RCU_CLAIMED) {
			if (!s->size) {
				mark_dirty(&tc->rcu_dirty);
				drain_notify(false, true);
			}
			s->objects[s->size++] = obj;
			stat(c, free_rcu_sheaf);
			if (s->size == s->capacity) {
				__atomic_store_n(slot, NULL, __ATOMIC_RELEASE);
				rcu_want(tc, c);
				handoff_sheaf_ctx(s, true);
			} else {
				__atomic_store_n(slot, s, __ATOMIC_RELEASE);
			}
			return;
		}
		if (!s && slot) {
			__atomic_store_n(slot, NULL, __ATOMIC_RELEASE);   /* we claimed an empty slot */
			rcu_want(tc, c);
		}
		stat(c, free_rcu_sheaf_fail);
	}
	handoff_link_ctx((struct rcu_link *)field, true);
}

void sheaf_rcu_free_nolock_field(void *obj, void *field)
{
	if (likely(rcu_free_fast(obj, field)))
		return;
	if (obj)
		rcu_free_nolock_slow(obj, field);
}

/* The owner's side of tc->rcu_want: empty sheaves in the slots that
 * rcu_free_nolock() found empty.  Other threads only take sheaves out of a
 * slot, so the compare-and-swap fails only if a handler that ran meanwhile
 * put one there (from the barn). */
void rcu_provision(struct thread_cache *tc)
{
	uint64_t want = __atomic_exchange_n(&tc->rcu_want, 0, __ATOMIC_RELAXED);
	while (want) {
		unsigned int cls = (unsigned int)__builtin_ctzll(want);
		want &= want - 1;
		struct sheaf_cache *c = &kmalloc_caches[cls];
		struct sheaf **slot = &tc->pcs[cls].rcu_free;
		if (__atomic_load_n(slot, __ATOMIC_RELAXED) || !c->sheaf_capacity)
			continue;
		struct cache_node *home = &c->node[tc->node];
		struct sheaf *s = barn_get_empty(c, home);
		if (!s)
			s = sheaf_new(c);
		if (!s)
			continue;
		s->cache = c;
		struct sheaf *expect = NULL;
		if (!__atomic_compare_exchange_n(slot, &expect, s, false, __ATOMIC_RELEASE,
						 __ATOMIC_RELAXED))
			barn_put_empty(c, home, s);
	}
}

void rcu_nolock_poll(void)
{
	if (__atomic_exchange_n(&rcu_start_pending, 0, __ATOMIC_ACQ_REL) &&
	    !__atomic_load_n(&drain_no_start, __ATOMIC_RELAXED) && drain_start())
		drain_wake();
}

void sheaf_rcu_free_nofield(void *obj)
{
	if (likely(rcu_free_fast(obj, NULL)))
		return;
	rcu_free_slow(obj, NULL, "rcu_free_mightsleep()");
}

/* Waits until the drain thread has completed ticket `t`. */
static int drain_wait(uint64_t t)
{
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		uint64_t d = __atomic_load_n(&drain_done, __ATOMIC_ACQUIRE);
		if (d >= t)
			return 0;
		struct timespec ts = { 0, 50 * 1000000L };
		futex((int *)&drain_done, FUTEX_WAIT_PRIVATE, (int)d, &ts);
		if (__atomic_load_n(&fork_child, __ATOMIC_RELAXED)) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
			if (ms >= (long)sheaf_opt.rcu_fork_barrier_ms) {
				errno = ETIMEDOUT;
				return -1;
			}
		}
	}
}

static int barrier_wait_offline(struct sheaf_cache *only)
{
	nolock_poll();
	if (config_tiny)
		urcu_qsbr_barrier();   /* call_rcu() callbacks */
	threads_foreach(steal_all_cb, only);
	uint64_t t = __atomic_add_fetch(&drain_req, 1, __ATOMIC_ACQ_REL);
	if (!__atomic_load_n(&drain_running, __ATOMIC_ACQUIRE) && !drain_start()) {
		/* No drain thread can be started: do its work here. */
		lock_acquire(&drain_lock);
		drain_cycle(false);
		if (__atomic_load_n(&drain_done, __ATOMIC_RELAXED) < t)
			__atomic_store_n(&drain_done, t, __ATOMIC_RELEASE);
		lock_release(&drain_lock);
		return 0;
	}
	drain_wake();
	return drain_wait(t);
}

static int rcu_barrier_wait(struct sheaf_cache *only)
{
	if (!__atomic_load_n(&sheaf_ready, __ATOMIC_ACQUIRE))
		return 0;
	/* Nothing was ever deferred (rcu_free() before this call happens
	 * before it, so its note is seen): no thread to start, nothing to
	 * wait for.  A handler's rcu_free_nolock() notes before it queues. */
	if (!__atomic_load_n(&rcu_deferred_ever, __ATOMIC_ACQUIRE))
		return 0;
	/* A registered, online QSBR caller would stall the grace period the
	 * barrier waits for: waiting here is a quiescent state, as it is in
	 * synchronize_rcu(). */
	bool was_online = urcu_qsbr_read_ongoing();
	if (was_online)
		urcu_qsbr_thread_offline();
	int ret = barrier_wait_offline(only);
	if (was_online)
		urcu_qsbr_thread_online();
	return ret;
}

int rcu_free_barrier(void)
{
	return rcu_barrier_wait(NULL);
}

int sheaf_cache_rcu_barrier(struct sheaf_cache *cache)
{
	return rcu_barrier_wait(cache);
}

/* ------------------------------------------------------ life cycle */
void rcu_fork_child_begin(void)
{
	__atomic_store_n(&drain_no_start, 1, __ATOMIC_RELAXED);
}

void rcu_fork_child(void)
{
	__atomic_store_n(&drain_no_start, 0, __ATOMIC_RELAXED);
	/* The drain thread does not exist here; it restarts on demand.  What
	 * the parent's thread was holding mid-batch stays unfreed (never
	 * early). */
	lock_reinit(&drain_lock);
	drain_running = 0;
	drain_idle = 0;
	drain_stop = 0;
	drain_done = drain_req;
	__atomic_store_n(&fork_child, 1, __ATOMIC_RELAXED);
}

void rcu_stats(uint64_t *gps, uint64_t *objects, uint64_t *pending, uint64_t *fallback)
{
	*gps = __atomic_load_n(&rcu_gp_count, __ATOMIC_RELAXED);
	*objects = __atomic_load_n(&rcu_freed_objs, __ATOMIC_RELAXED);
	*pending = __atomic_load_n(&rcu_pending_objs, __ATOMIC_RELAXED);
	*fallback = __atomic_load_n(&rcu_fallback_count, __ATOMIC_RELAXED);
}

/* At exit the drain thread is told to stop, and waited for briefly: it may
 * be inside synchronize_rcu() behind a reader that never reports again,
 * and exit must not hang on that. */
__attribute__((destructor)) static void rcu_shutdown(void)
{
	if (!__atomic_load_n(&drain_running, __ATOMIC_ACQUIRE))
		return;
	__atomic_store_n(&drain_stop, 1, __ATOMIC_RELEASE);
	drain_wake();
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 200 * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	if (pthread_timedjoin_np(drain_tid, NULL, &ts) == 0)
		__atomic_store_n(&drain_running, 0, __ATOMIC_RELEASE);
}
