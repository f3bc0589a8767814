/*
 * sheaf.c - per-thread sheaves and the slow paths behind the fast paths.
 *
 * Each thread has, per cache, a main and a spare sheaf (struct pcs).  The
 * fast paths (fastpath.h) pop from / push to main and nothing else.  When
 * main is empty (alloc) or full (free), the slow path here tries, in order
 * of cost, as the kernel's __pcs_replace_empty_main() and free_to_pcs()
 * do:
 *   1. the spare sheaf          (swap, thread-local)
 *   2. the barn                 (exchange a whole sheaf, one short lock)
 *   3. the slabs                (refill or flush in bulk, node lock)
 * so the slabs see one locked bulk operation per sheaf of objects.  The
 * barn and slabs are those of the thread's home node (struct cache_node);
 * a refill that finds no object there takes a full sheaf from another
 * node's barn (its own node's objects first) before it makes a new slab.
 */
#include "internal.h"

#include <errno.h>

struct sheaf sheaf_empty;  /* size 0, capacity 0: see internal.h */

static size_t sheaf_bytes(unsigned int capacity)
{
	return sizeof(struct sheaf) + (size_t)capacity * sizeof(void *);
}

struct sheaf *sheaf_new(struct sheaf_cache *c)
{
	struct sheaf *s = meta_alloc(sheaf_bytes(c->sheaf_capacity));
	if (s) {
		s->capacity = c->sheaf_capacity;
		stat(c, sheaf_alloc);
	}
	return s;
}

void sheaf_delete(struct sheaf *s)
{
	meta_free(s, sheaf_bytes(s->capacity));
}

static unsigned int refill_from(struct sheaf_cache *c, struct cache_node *n, struct sheaf *s, bool grow)
{
	unsigned int got = cache_alloc_from_slabs(c, n, s->objects + s->size, s->capacity - s->size, grow);
	s->size += got;
	return got;
}

/*
 * An empty main sheaf -> one with objects, or NULL: the home node's slabs
 * as they are (a part of a sheaf will do: the next slow path comes
 * sooner), else a full sheaf from another node's barn (exchanged for `s`),
 * else new slabs at home.  Objects freed anywhere are so used before the
 * process grows: topping a part up from new slabs while other barns held
 * full sheaves made a program whose threads free each other's blocks grow
 * at every round.
 */
static struct sheaf *refill_main(struct sheaf_cache *c, struct cache_node *home, struct sheaf *s)
{
	/* Not before the home node has a slab of its own: a thread that
	 * starts would take the other threads' sheaves for its first
	 * objects and share their cache lines (test_node saw it in the first
	 * round of bench-malloc-thread's loop). */
	if (!refill_from(c, home, s, false) && sheaf_nr_nodes > 1 &&
	    __atomic_load_n(&home->nr_partial, __ATOMIC_RELAXED) +
			    __atomic_load_n(&home->nr_full, __ATOMIC_RELAXED) +
			    __atomic_load_n(&home->nr_empty, __ATOMIC_RELAXED)) {
		struct sheaf *full = barn_replace_empty_remote(c, home, s);
		if (full)
			return full;
	}
	if (!s->size)
		refill_from(c, home, s, true);
	if (!s->size)
		return NULL;
	stat(c, sheaf_refill);
	return s;
}

struct cache_node *sheaf_node(struct sheaf_cache *c, const struct sheaf *s)
{
	if (sheaf_nr_nodes == 1 || !s->size)
		return &c->node[0];
	const struct slab *slab = (const struct slab *)pagemap_lookup((uintptr_t)s->objects[0]);
	sheaf_assert(slab && slab->cache == c);
	return slab_node(slab);
}

unsigned int sheaf_settle(struct sheaf_cache *c, struct sheaf *s)
{
	if (likely(!s->unsettled))
		return 0;
	s->unsettled = false;
	uint32_t k = 0;
	for (uint32_t i = 0; i < s->size; i++) {
		void *o = s->objects[i];
		if (unlikely(obj_marked_free(c, o))) {
			stat(c, free_invalid);
			diag_bad_pointer("rcu_free()", o, "double free of %p in cache %s", o, c->name);
			continue;
		}
		obj_mark_free(c, o);
		s->objects[k++] = o;
	}
	unsigned int dups = s->size - k;
	s->size = k;
	stat_add(c, SHEAF_STAT_free_slow, -(uint64_t)dups);
	return dups;
}

void sheaf_flush(struct sheaf_cache *c, struct sheaf *s)
{
	if (s->unsettled)
		rcu_note_duplicates(sheaf_settle(c, s));
	if (!s->size)
		return;
	cache_free_to_slabs(c, s->objects, s->size);
	s->size = 0;
	stat(c, sheaf_flush);
}

static void *alloc_direct(struct sheaf_cache *c)
{
	void *p;
	if (!cache_alloc_from_slabs(c, cache_home(c), &p, 1, true)) {
		errno = ENOMEM;
		return NULL;
	}
	if (unlikely(c->debug))
		p = debug_on_alloc(c, p);   /* slot -> checked object */
	/* The marker word must lie inside what memcheck calls the block
	 * (objects smaller than a word keep it in their stride). */
	vg_alloc(p, c->marker_off || c->object_size >= sizeof(uintptr_t) ? c->object_size :
		 sizeof(uintptr_t), /* constructed objects are defined */ c->ctor != NULL);
	obj_mark_alloc(c, p);
	stat(c, alloc_slow);
	stat(c, slab_direct);
	return p;
}

void *sheaf_alloc_slow(struct sheaf_cache *c, struct pcs *pcs)
{
	struct sheaf *main = pcs_main_out(pcs);
	struct cache_node *home = cache_home(c);

	if (main == &sheaf_empty) {
		/* First allocation from this cache by this thread. */
		main = barn_get_full(c, home);
		if (!main) {
			main = sheaf_new(c);
			if (!main)
				return alloc_direct(c);
		}
	} else if (pcs->spare && pcs->spare->size) {
		struct sheaf *spare = pcs->spare;
		pcs->spare = main;
		main = spare;
		stat(c, sheaf_swap);
	} else if (!pcs->spare) {
		/* Keep the empty main as spare: the next burst of frees will
		 * need room. */
		struct sheaf *full = barn_get_full(c, home);
		if (full) {
			pcs->spare = main;
			main = full;
		}
	} else {
		struct sheaf *full = barn_replace_empty_sheaf(c, home, main);
		if (full)
			main = full;
	}

	if (!main->size) {
		struct sheaf *got = refill_main(c, home, main);
		if (got)
			main = got;
	}
	bool empty = !main->size;
	void *p = empty ? NULL : main->objects[--main->size];
	pcs_set_main(pcs, main);
	if (empty) {
		errno = ENOMEM;
		return NULL;
	}
	obj_mark_alloc(c, p);
	stat(c, alloc_slow);   /* counted only when it succeeds: stats derive live objects */
	return p;
}

void sheaf_free_slow(struct sheaf_cache *c, struct pcs *pcs, void *obj)
{
	struct sheaf *main = pcs_main_out(pcs);
	obj_mark_free(c, obj);
	stat(c, free_slow);

	if (main == &sheaf_empty) {
		main = barn_get_empty(c, cache_home(c));
		if (!main)
			main = sheaf_new(c);
		if (!main)
			goto direct;
	} else if (main->size == main->capacity) {
		struct sheaf *spare = pcs->spare, *empty;
		if (spare && spare->size < spare->capacity) {
			pcs->spare = main;
			main = spare;
			stat(c, sheaf_swap);
		} else if (!spare) {
			empty = barn_get_empty(c, cache_home(c));
			if (!empty)
				empty = sheaf_new(c);
			if (empty) {
				pcs->spare = main;
				main = empty;
			} else {
				sheaf_flush(c, main);
			}
		} else if ((empty = barn_replace_full_sheaf(c, cache_home(c), main))) {
			main = empty;
		} else {
			/* The barn holds enough full sheaves: objects go back
			 * to their slabs, which may then return memory. */
			sheaf_flush(c, main);
		}
	}
	main->objects[main->size++] = obj;
	barrier();  /* a signal handler's fork() child sees the size only after the slot */
	pcs_set_main(pcs, main);
	return;

direct:
	cache_free_to_slabs(c, &obj, 1);
	stat(c, slab_direct);
}

static void pcs_give_back(struct sheaf_cache *c, struct sheaf *s, struct cache_node *home)
{
	if (!s || s == &sheaf_empty)
		return;
	if (s->size == s->capacity && s->size && barn_put_full(c, home, s))
		return;
	sheaf_flush(c, s);
	barn_put_empty(c, home, s);
}

void pcs_drain(struct sheaf_cache *c, struct pcs *pcs, struct cache_node *home)
{
	struct sheaf *main = pcs_main_out(pcs), *spare = pcs->spare;
	pcs_set_main(pcs, &sheaf_empty);
	pcs->spare = NULL;
	pcs_give_back(c, main, home);
	pcs_give_back(c, spare, home);
	pcs_fold_counters(c, pcs);
}

void pcs_fold_counters(struct sheaf_cache *c, struct pcs *pcs)
{
	stat_add(c, SHEAF_STAT_alloc_fast, pcs->alloc_fast);
	stat_add(c, SHEAF_STAT_free_fast, pcs->free_fast);
	stat_add(c, SHEAF_STAT_free_rcu_sheaf, pcs->rcu_sheaf);
	pcs->alloc_fast = pcs->free_fast = pcs->rcu_sheaf = 0;
}

static struct pcs *pcs_of(struct sheaf_cache *c)
{
	/* Tiny builds keep no per-thread state at all. */
	if (config_tiny || !c->sheaf_capacity)
		return NULL;
	struct thread_cache *tc = thread_cache_get();
	if (!tc)
		return NULL;
	return c->cls < NR_CLASSES ? &tc->pcs[c->cls] : thread_ext_pcs(tc, c);
}

/* The caller's thread state; refills what signal handlers ran out of. */
static struct thread_cache *tc_enter(void)
{
	struct thread_cache *tc = thread_cache_get();
	if (tc && unlikely(tc->nolock_want))
		nolock_refill(tc);
	if (tc && unlikely(__atomic_load_n(&tc->rcu_want, __ATOMIC_RELAXED)))
		rcu_provision(tc);
	return tc;
}

static void tc_leave(struct thread_cache *tc)
{
	(void)tc;
}

void *cache_alloc_any(struct sheaf_cache *c)
{
	nolock_poll();
	struct thread_cache *tc = tc_enter();
	struct pcs *pcs = pcs_of(c);
	void *p;
	if (!pcs) {
		p = alloc_direct(c);
	} else if (pcs->size) {
		p = pcs_pop(pcs);
		obj_mark_alloc(c, p);
	} else {
		test_hook(HOOK_ALLOC_SLOW);
		p = sheaf_alloc_slow(c, pcs);
	}
	tc_leave(tc);
	return p;
}

/* A debugged cache's free: exact double-free check first (so that the
 * recorded free site is still the first free's), then the debug hooks. */
static void debug_free(struct sheaf_cache *c, void *obj)
{
	struct slab *s = (struct slab *)pagemap_lookup((uintptr_t)obj);
	sheaf_assert(s);   /* free() found obj in one of c's slabs */
	lock_acquire(&slab_node(s)->lock);
	bool already = slab_obj_is_free(s, slab_index(s, (uintptr_t)obj));
	if (c->debug & DEBUG_F)
		debug_slab_consistent(c, s);
	lock_release(&slab_node(s)->lock);
	if (already) {
		stat(c, free_invalid);
		debug_report_double_free(c, s, obj);
		return;
	}
	debug_on_free(c, s, obj);   /* checks before the marker write below */
	if (!(c->debug & DEBUG_P))
		obj_mark_free(c, obj);  /* poison replaced it: the bitmap is exact */
	vg_free(obj);
	stat(c, free_slow);
	cache_free_to_slabs(c, &obj, 1);
	stat(c, slab_direct);
}

void cache_free_any(struct sheaf_cache *c, void *obj)
{
	struct thread_cache *tc = tc_enter();
	struct pcs *pcs = pcs_of(c);
	if (!pcs && unlikely(c->debug)) {
		debug_free(c, obj);
	} else if (!pcs) {
		obj_mark_free(c, obj);
		/* memcheck hears of the free before another thread can take
		 * the object from the slab and allocate it again. */
		vg_free(obj);
		stat(c, free_slow);
		cache_free_to_slabs(c, &obj, 1);
		stat(c, slab_direct);
	} else if (pcs->size < pcs->capacity) {
		obj_mark_free(c, obj);
		pcs_push(pcs, obj);
	} else {
		test_hook(HOOK_FREE_SLOW);
		sheaf_free_slow(c, pcs, obj);
	}
	tc_leave(tc);
	nolock_poll();
}
