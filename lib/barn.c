/*
 * barn.c - the per-cache store of full and empty sheaves (the kernel's
 * struct node_barn).
 *
 * Threads exchange whole sheaves here in O(1): a thread whose sheaves ran
 * dry swaps an empty one for a full one, a thread whose sheaves filled up
 * swaps a full one for an empty one.  A producer/consumer pair of threads
 * thus moves objects between each other a sheaf at a time, without touching
 * slabs.  Both lists are bounded (barn_full, barn_empty options): beyond
 * them full sheaves are flushed to slabs and empty ones are freed, so the
 * barn cannot hoard memory.
 *
 * The automatic bound of full sheaves has two levels: what the barn keeps
 * for good (about 1 MiB of objects, barn_keep_full) and what a burst may
 * park (8x that, barn_max_full).  Once the barn has stayed over its keep
 * for barn_decay_ms, the next put flushes the excess to the slabs, where
 * emptied slabs decay to the OS in turn (jemalloc's dirty decay, checked on
 * activity as the slabs' is).  A program that cycles through a working set
 * larger than the keep - allocate 6 MiB of 4 KiB blocks, free them, again -
 * drops under the keep at every cycle and never pays the flush and refill.
 *
 * Sheaves in a barn are either completely full or completely empty.
 *
 * A cache has a barn per node (struct cache_node): a thread exchanges with
 * its home node's.  A full sheaf carries the node of its objects
 * (sheaf->node, set by the put), so that a thread of another node can take
 * back its own objects: a producer's, freed by a consumer on another node.
 */
#include "internal.h"

void barn_init(struct barn *b)
{
	lock_reinit(&b->lock);
	b->full = b->empty = NULL;
	b->nr_full = b->nr_empty = 0;
	b->over_since = b->over_puts = 0;
}

/* The counts are stored atomically: barn_replace_empty_remote() reads
 * other nodes' without their lock. */
static struct sheaf *pop(struct sheaf **list, unsigned int *nr)
{
	struct sheaf *s = *list;
	if (s) {
		*list = s->next;
		s->next = NULL;
		__atomic_store_n(nr, *nr - 1, __ATOMIC_RELAXED);
	}
	return s;
}

static void push(struct sheaf **list, unsigned int *nr, struct sheaf *s)
{
	s->next = *list;
	*list = s;
	__atomic_store_n(nr, *nr + 1, __ATOMIC_RELAXED);
}

/* Under b->lock, after a full sheaf was taken. */
static void full_taken(struct sheaf_cache *c, struct barn *b)
{
	if (b->nr_full <= c->barn_keep_full)
		b->over_since = 0;
}

/* Under b->lock, after a full sheaf was put: the sheaves over the keep once
 * they have been there barn_decay_ms (a list for full_flush(), after the
 * lock), else NULL.  The clock is read when the barn goes over and every
 * 8th put after that, not on every put. */
static struct sheaf *full_put(struct sheaf_cache *c, struct barn *b)
{
	if (b->nr_full <= c->barn_keep_full)
		return NULL;
	if (!b->over_since) {
		b->over_since = coarse_ms() | 1;   /* 0 means "not over" */
		b->over_puts = 0;
		return NULL;
	}
	if (++b->over_puts % 8 || ms_elapsed(coarse_ms(), b->over_since) < sheaf_opt.barn_decay_ms)
		return NULL;
	struct sheaf *out = NULL;
	while (b->nr_full > c->barn_keep_full) {
		struct sheaf *s = pop(&b->full, &b->nr_full);
		s->next = out;
		out = s;
	}
	b->over_since = 0;
	return out;
}

/* Flushes a list from full_put() to the slabs and frees the sheaves. */
static void full_flush(struct sheaf_cache *c, struct sheaf *list)
{
	while (list) {
		struct sheaf *n = list->next;
		sheaf_flush(c, list);
		sheaf_delete(list);
		stat(c, barn_decay);
		list = n;
	}
}

/* A full sheaf leaving the barn for a thread: an rcu sheaf gets its
 * markers written now (sheaf_settle()); double frees found then leave it
 * short of full, which a thread's main sheaf may be. */
static struct sheaf *taken(struct sheaf_cache *c, struct sheaf *s)
{
	if (s && unlikely(s->unsettled))
		rcu_note_duplicates(sheaf_settle(c, s));
	return s;
}

struct sheaf *barn_get_full(struct sheaf_cache *c, struct cache_node *n)
{
	struct barn *b = &n->barn;
	lock_acquire(&b->lock);
	struct sheaf *s = pop(&b->full, &b->nr_full);
	full_taken(c, b);
	lock_release(&b->lock);
	stat_add(c, s ? SHEAF_STAT_barn_get : SHEAF_STAT_barn_get_fail, 1);
	return taken(c, s);
}

struct sheaf *barn_get_empty(struct sheaf_cache *c, struct cache_node *n)
{
	struct barn *b = &n->barn;
	(void)c;
	lock_acquire(&b->lock);
	struct sheaf *s = pop(&b->empty, &b->nr_empty);
	lock_release(&b->lock);
	return s;
}

bool barn_put_full(struct sheaf_cache *c, struct cache_node *n, struct sheaf *s)
{
	struct barn *b = &n->barn;
	sheaf_assert(s->size == s->capacity);
	s->node = (uint8_t)(sheaf_node(c, s) - c->node);
	bool ok = false;
	struct sheaf *excess = NULL;
	lock_acquire(&b->lock);
	if (b->nr_full < c->barn_max_full) {
		push(&b->full, &b->nr_full, s);
		excess = full_put(c, b);
		ok = true;
	}
	lock_release(&b->lock);
	stat_add(c, ok ? SHEAF_STAT_barn_put : SHEAF_STAT_barn_put_fail, 1);
	full_flush(c, excess);
	return ok;
}

void barn_put_empty(struct sheaf_cache *c, struct cache_node *n, struct sheaf *s)
{
	struct barn *b = &n->barn;
	sheaf_assert(s->size == 0);
	lock_acquire(&b->lock);
	if (b->nr_empty < sheaf_opt.barn_empty) {
		push(&b->empty, &b->nr_empty, s);
		s = NULL;
	}
	lock_release(&b->lock);
	if (s) {
		sheaf_delete(s);
		stat(c, sheaf_free);
	}
}

/* How far down a barn's list barn_replace_empty_remote() looks for a sheaf
 * of the taker's objects: a bounded walk under the lock. */
#define REMOTE_SCAN 32

/* Unlinks the first full sheaf (of the first REMOTE_SCAN) whose objects
 * are node `want`'s; NULL if none. */
static struct sheaf *pop_node(struct barn *b, unsigned int want)
{
	struct sheaf **pp = &b->full;
	for (unsigned int k = 0; *pp && k < REMOTE_SCAN; k++, pp = &(*pp)->next)
		if ((*pp)->node == want)
			return pop(pp, &b->nr_full);
	return NULL;
}

/* A full sheaf for `empty`: of node `want`'s objects if there is one
 * (want < SHEAF_MAX_NODES), else the newest; NULL (the caller keeps
 * `empty`) if the barn has none. */
static struct sheaf *exchange_empty(struct sheaf_cache *c, struct barn *b, struct sheaf *empty,
				    unsigned int want)
{
	lock_acquire(&b->lock);
	test_hook(HOOK_BARN_LOCKED);
	struct sheaf *full = want < SHEAF_MAX_NODES ? pop_node(b, want) : NULL;
	if (!full)
		full = pop(&b->full, &b->nr_full);
	if (full) {
		full_taken(c, b);
		if (b->nr_empty < sheaf_opt.barn_empty) {
			push(&b->empty, &b->nr_empty, empty);
			empty = NULL;
		}
	}
	lock_release(&b->lock);
	if (full && empty) {
		sheaf_delete(empty);
		stat(c, sheaf_free);
	}
	return taken(c, full);
}

struct sheaf *barn_replace_empty_sheaf(struct sheaf_cache *c, struct cache_node *n,
				       struct sheaf *empty)
{
	struct sheaf *full = exchange_empty(c, &n->barn, empty, SHEAF_MAX_NODES);
	stat_add(c, full ? SHEAF_STAT_barn_get : SHEAF_STAT_barn_get_fail, 1);
	return full;
}

/*
 * Any full sheaf, a sheaf of the taker's own node's objects first (a
 * consumer on that node freed them).  Only a thread whose home has
 * nothing at all comes here, so a node's threads keep cycling through what
 * they freed, and threads with private working sets (bench-malloc-thread)
 * do not meet each other's blocks.  Taking only what a barn held beyond
 * its keep, a program whose threads free each other's blocks grew at every
 * round: each node kept a keep's worth the other could not use (larson
 * with 2 threads: 15 MiB peak RSS against 11 with one node).
 */
struct sheaf *barn_replace_empty_remote(struct sheaf_cache *c, struct cache_node *home,
					struct sheaf *empty)
{
	unsigned int h = (unsigned int)(home - c->node);
	for (unsigned int k = 1; k < sheaf_nr_nodes; k++) {
		struct barn *b = &c->node[(h + k) % sheaf_nr_nodes].barn;
		/* A racy look first: only a barn that seems to have some is
		 * locked. */
		if (!__atomic_load_n(&b->nr_full, __ATOMIC_RELAXED))
			continue;
		struct sheaf *full = exchange_empty(c, b, empty, h);
		if (full) {
			stat(c, barn_get_remote);
			return full;
		}
	}
	return NULL;
}

struct sheaf *barn_replace_full_sheaf(struct sheaf_cache *c, struct cache_node *n,
				      struct sheaf *full)
{
	struct barn *b = &n->barn;
	full->node = (uint8_t)(sheaf_node(c, full) - c->node);
	struct sheaf *empty;
	lock_acquire(&b->lock);
	if (b->nr_full >= c->barn_max_full)
		goto at_bound;
	empty = pop(&b->empty, &b->nr_empty);
	if (empty) {
		push(&b->full, &b->nr_full, full);
		struct sheaf *excess = full_put(c, b);
		lock_release(&b->lock);
		stat(c, barn_put);
		full_flush(c, excess);
		return empty;
	}
	lock_release(&b->lock);

	/* No empty sheaf parked: make one without holding the lock, then
	 * check the bound again, since other threads may have filled it. */
	empty = sheaf_new(c);
	if (!empty)
		return NULL;
	lock_acquire(&b->lock);
	if (b->nr_full >= c->barn_max_full) {
		lock_release(&b->lock);
		barn_put_empty(c, n, empty);
		stat(c, barn_put_fail);
		return NULL;
	}
	push(&b->full, &b->nr_full, full);
	struct sheaf *excess = full_put(c, b);
	lock_release(&b->lock);
	stat(c, barn_put);
	full_flush(c, excess);
	return empty;

at_bound:
	lock_release(&b->lock);
	stat(c, barn_put_fail);
	return NULL;
}

static void barn_drain_node(struct sheaf_cache *c, struct barn *b)
{
	lock_acquire(&b->lock);
	struct sheaf *full = b->full, *empty = b->empty;
	b->full = b->empty = NULL;
	__atomic_store_n(&b->nr_full, 0, __ATOMIC_RELAXED);
	b->nr_empty = 0;
	b->over_since = 0;
	lock_release(&b->lock);
	while (full) {
		struct sheaf *n = full->next;
		sheaf_flush(c, full);
		sheaf_delete(full);
		full = n;
	}
	while (empty) {
		struct sheaf *n = empty->next;
		sheaf_delete(empty);
		empty = n;
	}
}

void barn_drain(struct sheaf_cache *c)
{
	for (unsigned int i = 0; i < sheaf_nr_nodes; i++)
		barn_drain_node(c, &c->node[i].barn);
}



/* For signal handlers (rcu_free_nolock()): never waits for the lock. */
struct sheaf *barn_try_get_empty(struct sheaf_cache *c, struct cache_node *n)
{
	struct barn *b = &n->barn;
	(void)c;
	if (!lock_try(&b->lock))
		return NULL;
	struct sheaf *s = pop(&b->empty, &b->nr_empty);
	lock_release(&b->lock);
	return s;
}
