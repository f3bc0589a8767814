/*
 * cache.c - slab caches (the kernel's struct kmem_cache).
 *
 * A cache owns its counters and, per node (struct cache_node, the kernel's
 * kmem_cache_node), a barn and slabs on three lists (partial, empty, full)
 * under the node's lock.  Objects reach the slabs only in bulk, from the
 * sheaf slow paths: cache_alloc_from_slabs() fills a sheaf from one node,
 * cache_free_to_slabs() empties one into whatever slabs its objects belong
 * to.  The per-thread fast paths never come here.
 *
 * The public sheaf_cache_* functions are at the bottom.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "sheaf/rcu.h"

sheaf_lock_t caches_lock = SHEAF_LOCK_INIT;
static struct sheaf_cache *caches_head, *caches_tail;
/* Empty slabs of all caches, in bytes (atomic).  Keeping some avoids a
 * madvise + page faults cycle for programs that repeatedly free and
 * reallocate a batch; the budget bounds what an idle program keeps. */
static size_t retained_bytes;

size_t cache_retained_bytes(void)
{
	return __atomic_load_n(&retained_bytes, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- nodes */
unsigned int sheaf_nr_nodes = 1;

/* A user cache's nodes follow it in one meta block. */
_Static_assert(sizeof(struct sheaf_cache) % CACHELINE == 0, "nodes after a cache stay aligned");

size_t cache_alloc_size(void)
{
	return sizeof(struct sheaf_cache) + sheaf_nr_nodes * sizeof(struct cache_node);
}

/* ---------------------------------------------------------------- lists */
static struct slab **list_head(struct cache_node *n, unsigned int which)
{
	return which == SLAB_ON_PARTIAL ? &n->partial : which == SLAB_ON_EMPTY ? &n->empty : &n->full;
}
static unsigned long *list_count(struct cache_node *n, unsigned int which)
{
	return which == SLAB_ON_PARTIAL ? &n->nr_partial :
	       which == SLAB_ON_EMPTY ? &n->nr_empty : &n->nr_full;
}

static void slab_list_del(struct cache_node *n, struct slab *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		*list_head(n, s->list) = s->next;
	if (s->next)
		s->next->prev = s->prev;
	unsigned long *count = list_count(n, s->list);
	__atomic_store_n(count, *count - 1, __ATOMIC_RELAXED);   /* read unlocked: refill_main() */
	if (s->list == SLAB_ON_EMPTY)
		__atomic_fetch_sub(&retained_bytes, SLAB_MIN_BYTES << s->order, __ATOMIC_RELAXED);
	s->next = s->prev = NULL;
}

static void slab_list_add(struct cache_node *n, struct slab *s, unsigned int which)
{
	struct slab **head = list_head(n, which);
	s->list = (uint8_t)which;
	s->prev = NULL;
	s->next = *head;
	if (*head)
		(*head)->prev = s;
	*head = s;
	unsigned long *count = list_count(n, which);
	__atomic_store_n(count, *count + 1, __ATOMIC_RELAXED);
	if (which == SLAB_ON_EMPTY) {
		__atomic_fetch_add(&retained_bytes, SLAB_MIN_BYTES << s->order, __ATOMIC_RELAXED);
		s->empty_since = coarse_ms();
	}
}

/* Puts a slab on the list its fill level says. */
static void slab_relist(struct cache_node *n, struct slab *s)
{
	unsigned int want = s->inuse == 0 ? SLAB_ON_EMPTY :
			    s->inuse == s->objects ? SLAB_ON_FULL : SLAB_ON_PARTIAL;
	if (want != s->list) {
		slab_list_del(n, s);
		slab_list_add(n, s, want);
	}
}

/* ----------------------------------------------------------------- setup */
/*
 * The smallest slab order that holds at least 8 objects with at most 1/8
 * of the run wasted.  `guard`: the run ends in a guard page (secure mode),
 * which is then counted as waste, so secure slabs start at 64 KiB (a
 * 16 KiB slab would give a quarter of itself to its guard).
 */
static unsigned int slab_order_for(uint32_t stride, size_t guard)
{
	unsigned int order = guard ? 2 : 0;
	for (;;) {
		size_t bytes = (SLAB_MIN_BYTES << order) - guard;
		size_t objs = bytes / stride;
		size_t waste = bytes - objs * stride;
		if (objs > SLAB_MAX_OBJECTS)
			break;  /* cannot happen for order 0 with stride >= 8 */
		if ((objs >= 8 && waste * 8 <= bytes) || order == SLAB_MAX_ORDER)
			return order;
		order++;
	}
	return order;
}

int cache_setup(struct sheaf_cache *c, struct cache_node *nodes, const char *name, size_t size,
		size_t align, unsigned int flags, void (*ctor)(void *), int cls)
{
	if (size == 0 || size > CACHE_OBJ_MAX || (align & (align - 1)) || align > PAGE_SIZE ||
	    (flags & ~(SHEAF_HWCACHE_ALIGN | SHEAF_NO_SHEAVES)))
		return EINVAL;
	if (align < 8)
		align = 8;
	if (flags & SHEAF_HWCACHE_ALIGN && align < CACHELINE)
		align = CACHELINE;

	unsigned int debug = debug_flags_for(name);
	if (ctor)
		debug &= ~(unsigned int)DEBUG_P;   /* poison would undo the constructor */
	size_t stride = (size + 7) & ~(size_t)7;
	uint32_t marker_off = 0;
	if (ctor) {
		/* A constructed object must keep its state while free, so
		 * the free marker goes after it (as SLUB moves its free
		 * pointer out of objects with a constructor). */
		marker_off = (uint32_t)stride;
		stride += sizeof(uintptr_t);
	}
	uint32_t obj_offset = 0;
	if (debug & DEBUG_Z) {
		/* [red zone][object][red zone]; red zones of at least the
		 * alignment keep objects aligned. */
		obj_offset = (uint32_t)(align > DEBUG_RZ ? align : DEBUG_RZ);
		stride += 2 * obj_offset;
	}
	stride = (stride + align - 1) & ~(align - 1);

	memset(c, 0, sizeof(*c));
	c->node = nodes ? nodes : (struct cache_node *)(c + 1);
	c->debug = (uint8_t)debug;
	c->obj_offset = obj_offset;
	c->size = (uint32_t)stride;
	c->object_size = (uint32_t)size;
	c->align = (uint32_t)align;
	c->marker_off = marker_off;
	/* Markers of page-sized objects live beside the slab header: see
	 * obj_marker().  The malloc classes' fast paths know it by the
	 * class (CLASS_PAGE); a constructed object keeps its own. */
	c->ext_marks = cls >= 0 ? cls >= CLASS_PAGE : stride >= PAGE_SIZE && !ctor;
	c->cls = (uint16_t)(cls >= 0 ? cls : CLASS_NONE);
	c->flags = flags;
	c->ctor = ctor;
	/* Secure mode: a PROT_NONE page after the last object of every slab
	 * stops a linear overflow at the slab's end, and refills hand objects
	 * out in a random order (slab_take), so that what sits next to a
	 * block cannot be predicted. */
	size_t guard = sheaf_opt.secure ? PAGE_SIZE : 0;
	c->guard = guard != 0;
	c->slab_order = (uint8_t)slab_order_for(c->size, guard);
	c->objects_per_slab = (uint32_t)(((SLAB_MIN_BYTES << c->slab_order) - guard) / c->size);
	c->recip = slab_recip(c->size);
	slab_layout_init(c);
	/* A debugged cache has no sheaves: every operation is checked. */
	if (!config_tiny && !(flags & SHEAF_NO_SHEAVES) && !debug) {
		unsigned int cap = sheaf_opt.sheaf_capacity;
		if (!cap) {
			/* About 32 KiB of objects per sheaf: many small
			 * objects amortise the slow path, few large ones
			 * bound what a thread can hoard.  But at least 32
			 * objects or 128 KiB: with 8 objects of 4 KiB a loop
			 * over 25 blocks (glibc's bench-malloc-simple) took a
			 * slow path every 8 calls, 12 ns a call; with 32, 8 ns. */
			cap = (unsigned int)(32768 / stride);
			unsigned int floor = (unsigned int)(131072 / stride);
			if (cap < 32)
				cap = floor < 32 ? floor : 32;
			cap = cap < 4 ? 4 : cap > 128 ? 128 : cap;
		}
		if (cap > 1024)
			cap = 1024;
		c->sheaf_capacity = cap;
		unsigned int full = sheaf_opt.barn_full, keep = full;
		if (!full) {
			/* Bound by bytes, so that a batch of small objects
			 * travels between threads as sheaves without
			 * touching slabs, while a barn of large objects
			 * keeps no more than about a MiB for good.  A burst
			 * may park 8x that for barn_decay_ms (barn.c): a
			 * program cycling through 6 MiB of 4 KiB blocks
			 * (glibc's bench-malloc-simple, 1600 blocks) then
			 * never flushes and refills slabs, 24 -> 15 us a
			 * round.  Small objects too: capped at 256 sheaves,
			 * 64-byte ones parked 2 MiB, and a batch of 100 000
			 * (6.4 MB) went through the slabs' bitmaps at every
			 * round (batch_lifo/100000 9.7 -> 6.8 ns an object
			 * with room for them). */
			keep = (unsigned int)((1u << 20) / ((size_t)cap * stride));
			keep = keep < 8 ? 8 : keep > BARN_KEEP_MAX ? BARN_KEEP_MAX : keep;
			full = keep * 8 < BARN_PARK_MAX ? keep * 8 : BARN_PARK_MAX;
		}
		c->barn_max_full = full;
		c->barn_keep_full = keep;
	}
	size_t n = strlen(name);
	if (n >= sizeof(c->name))
		n = sizeof(c->name) - 1;
	memcpy(c->name, name, n);
	c->name[n] = '\0';
	for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
		struct cache_node *node = &c->node[i];
		memset(node, 0, sizeof(*node));
		lock_reinit(&node->lock);
		barn_init(&node->barn);
		node->rnd = sheaf_free_key ^ (uintptr_t)node;
	}

	lock_acquire(&caches_lock);
	if (caches_tail)
		caches_tail->next_cache = c;
	else
		caches_head = c;
	caches_tail = c;
	lock_release(&caches_lock);
	return 0;
}

static void cache_unlink(struct sheaf_cache *c)
{
	lock_acquire(&caches_lock);
	struct sheaf_cache **pp = &caches_head, *prev = NULL;
	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->next_cache;
	}
	if (*pp) {
		*pp = c->next_cache;
		if (caches_tail == c)
			caches_tail = prev;
	}
	lock_release(&caches_lock);
}

void caches_foreach(void (*fn)(struct sheaf_cache *c, void *arg), void *arg)
{
	/* Caches are only unlinked by sheaf_cache_destroy(), whose caller
	 * guarantees nobody else uses that cache; holding caches_lock makes
	 * the walk itself safe. */
	lock_acquire(&caches_lock);
	for (struct sheaf_cache *c = caches_head; c; c = c->next_cache)
		fn(c, arg);
	lock_release(&caches_lock);
}

/* ------------------------------------------------------------- bulk ops */
static void slabs_release(struct slab *list)
{
	while (list) {
		struct slab *next = list->next;
		slab_destroy(list);
		list = next;
	}
}

/* Detaches empty slabs of node `n` beyond `keep` (beyond the global
 * retain budget too unless `force`); returns them as a list.  Under the
 * node's lock. */
static struct slab *cache_detach_empty(struct cache_node *n, unsigned long keep, bool force)
{
	struct slab *out = NULL;
	while (n->nr_empty > keep && (force || cache_retained_bytes() > sheaf_opt.slab_retain)) {
		struct slab *s = n->empty;
		sheaf_assert(s);   /* nr_empty counts the list */
		slab_list_del(n, s);
		s->next = out;
		out = s;
	}
	/* Decay (like jemalloc's dirty decay, but without a background
	 * thread): empty slabs that stayed unused for slab_decay_ms go back
	 * when the cache is next used.  The list is newest first. */
	uint32_t now = coarse_ms();
	if (!force && n->nr_empty > keep && ms_elapsed(now, n->decay_checked) >= sheaf_opt.slab_decay_ms / 2) {
		n->decay_checked = now;
		unsigned long seen = 0;
		for (struct slab *s = n->empty, *next; s; s = next) {
			next = s->next;
			if (++seen > keep && ms_elapsed(now, s->empty_since) >= sheaf_opt.slab_decay_ms) {
				slab_list_del(n, s);
				s->next = out;
				out = s;
			}
		}
	}
	return out;
}

unsigned int cache_alloc_from_slabs(struct sheaf_cache *c, struct cache_node *n, void **out,
				    unsigned int count, bool grow)
{
	unsigned int got = 0;
	lock_acquire(&n->lock);
	while (got < count) {
		struct slab *s = n->partial ? n->partial : n->empty;
		if (!s) {
			if (!grow)
				break;
			/* No lock while carving: the constructor is user code. */
			lock_release(&n->lock);
			s = slab_create(c, (unsigned int)(n - c->node));
			lock_acquire(&n->lock);
			if (!s)
				break;
			slab_list_add(n, s, SLAB_ON_EMPTY);
		}
		got += slab_take(s, out + got, count - got);
		slab_relist(n, s);
	}
	lock_release(&n->lock);
	return got;
}

/* Done with node `n` in cache_free_to_slabs(): what it should release. */
static struct slab *node_put_done(struct cache_node *n)
{
	struct slab *release = cache_detach_empty(n, sheaf_opt.slab_reserve, false);
	lock_release(&n->lock);
	return release;
}

void cache_free_to_slabs(struct sheaf_cache *c, void **objs, unsigned int count)
{
	struct slab *s = NULL;
	struct cache_node *n = NULL;
	uintptr_t lo = 0, hi = 0;
	for (unsigned int i = 0; i < count; i++) {
		/* Objects of one sheaf often share slabs: skip the page
		 * map while they stay in the last one's run. */
		uintptr_t a = (uintptr_t)objs[i];
		if (a - lo >= hi - lo) {
			uintptr_t e = pagemap_lookup(a);
			s = (struct slab *)e;
			sheaf_assert(e && !(e & PM_TAG_LARGE) && s->cache == c);
			lo = s->base;
			hi = lo + (uintptr_t)s->objects * s->size;
			if (slab_node(s) != n) {
				/* Mostly one node a sheaf: the lock changes
				 * only where its objects do. */
				if (n)
					slabs_release(node_put_done(n));
				n = slab_node(s);
				lock_acquire(&n->lock);
				test_hook(HOOK_SLABS_LOCKED);
			}
		}
		sheaf_assert(s && n);   /* the first object always looks its slab up */
		if (unlikely(!slab_put(s, objs[i]))) {
			stat(c, free_invalid);
			if (c->debug) {
				debug_report_double_free(c, s, objs[i]);
				continue;
			}
			diag_bad_pointer("free()", objs[i],
					 "double free of %p in cache %s (found when its sheaf was flushed)",
					 objs[i], c->name);
			continue;
		}
		slab_relist(n, s);
	}
	if (n)
		slabs_release(node_put_done(n));
}

bool cache_shrink(struct sheaf_cache *c, unsigned long keep)
{
	bool any = false;
	for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
		struct cache_node *n = &c->node[i];
		lock_acquire(&n->lock);
		struct slab *release = cache_detach_empty(n, keep, true);
		lock_release(&n->lock);
		any |= release != NULL;
		slabs_release(release);
	}
	return any;
}

/* -------------------------------------------------------- free checking */
struct slab *cache_check_free(const char *func, uintptr_t entry, void *ptr)
{
	struct slab *s = (struct slab *)entry;
	if (!entry) {
		diag_bad_pointer(func, ptr, "invalid pointer %p: not allocated by sheaf", ptr);
		return NULL;
	}
	uint32_t obj_offset = s->cache->obj_offset;
	uintptr_t off = (uintptr_t)ptr - s->base - obj_offset;
	uint32_t idx = slab_index(s, (uintptr_t)ptr);
	if (unlikely((uintptr_t)ptr < s->base + obj_offset || idx >= s->objects ||
		     (uintptr_t)idx * s->size != off)) {
		stat(s->cache, free_invalid);
		if ((uintptr_t)ptr < s->base || idx >= s->objects)
			diag_bad_pointer(func, ptr, "invalid pointer %p: inside a slab of cache %s but not in any object",
					 ptr, s->cache->name);
		else
			diag_bad_pointer(func, ptr, "interior pointer %p: object %p + %ld in cache %s",
					 ptr, (void *)(s->base + (uintptr_t)idx * s->size + obj_offset),
					 (long)(off - (uintptr_t)idx * s->size), s->cache->name);
		return NULL;
	}
	if (unlikely(obj_marked_free(s->cache, ptr))) {
		stat(s->cache, free_invalid);
		if (s->cache->debug) {
			debug_report_double_free(s->cache, s, ptr);   /* with call sites */
			return NULL;
		}
		diag_bad_pointer(func, ptr, "double free of %p in cache %s", ptr, s->cache->name);
		return NULL;
	}
	return s;
}

/* -------------------------------------------------------------- fork */
/* Called with caches_lock and threads_lock held (thread.c keeps the order). */
void caches_fork_prepare(void)
{
	for (struct sheaf_cache *c = caches_head; c; c = c->next_cache)
		for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
			lock_acquire(&c->node[i].barn.lock);
			lock_acquire(&c->node[i].lock);
		}
}

void caches_fork_parent(void)
{
	for (struct sheaf_cache *c = caches_head; c; c = c->next_cache)
		for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
			lock_release(&c->node[i].lock);
			lock_release(&c->node[i].barn.lock);
		}
}

void caches_fork_child(void)
{
	for (struct sheaf_cache *c = caches_head; c; c = c->next_cache)
		for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
			lock_reinit(&c->node[i].lock);
			lock_reinit(&c->node[i].barn.lock);
		}
}

/* ------------------------------------------------------------ public API */
struct sheaf_cache *sheaf_cache_create(const char *name, size_t size, size_t align,
				       unsigned int flags, void (*ctor)(void *obj))
{
	if (!sheaf_ready)
		sheaf_init();
	struct sheaf_cache *c = meta_alloc(cache_alloc_size());
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	unsigned int id = cache_id_alloc();
	int err = cache_setup(c, NULL, name ? name : "(unnamed)", size, align, flags, ctor, -1);
	if (err) {
		cache_id_free(id);
		meta_free(c, cache_alloc_size());
		errno = err;
		return NULL;
	}
	c->id = id;
	return c;
}

static void drain_thread_pcs(struct thread_cache *tc, void *arg)
{
	struct sheaf_cache *c = arg;
	if (c->id < tc->nr_ext)
		pcs_drain(c, &tc->ext[c->id], &c->node[tc->node]);
}

int sheaf_cache_destroy(struct sheaf_cache *c)
{
	if (!c)
		return 0;
	/* Objects still waiting for a grace period must reach the slabs
	 * first (kmem_cache_destroy() does kvfree_rcu_barrier_on_cache()). */
	if (sheaf_cache_rcu_barrier(c) != 0)
		diag_printf("sheaf: sheaf_cache_destroy(%s): rcu_free()'d objects could not be waited for\n",
			    c->name);
	/* Take back what every thread still caches for this cache (the
	 * caller promised none of them is using it), then the barn. */
	threads_foreach(drain_thread_pcs, c);
	barn_drain(c);

	/* The caller promised that nobody uses the cache any more: the
	 * node locks are taken one at a time only to pair with what the
	 * slow paths that just ended wrote. */
	unsigned long live = 0;
	for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
		struct cache_node *n = &c->node[i];
		lock_acquire(&n->lock);
		for (unsigned int which = SLAB_ON_FULL; which <= SLAB_ON_PARTIAL; which++)
			for (struct slab *s = *list_head(n, which); s; s = s->next)
				live += s->inuse;
		lock_release(&n->lock);
	}
	if (live) {
		diag_printf("sheaf: sheaf_cache_destroy(%s): %lu objects still allocated; cache kept\n",
			    c->name, live);
		for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
			struct cache_node *n = &c->node[i];
			lock_acquire(&n->lock);
			for (unsigned int which = SLAB_ON_FULL; which <= SLAB_ON_PARTIAL; which++)
				for (struct slab *s = *list_head(n, which); s; s = s->next)
					if (s->inuse)
						diag_printf("sheaf:   slab %p: %u of %u objects allocated\n",
							    (void *)s->base, s->inuse, s->objects);
			lock_release(&n->lock);
		}
		errno = EBUSY;
		return -1;
	}
	cache_shrink(c, 0);
	cache_unlink(c);
	if (c->cls == CLASS_NONE) {
		cache_id_free(c->id);
		meta_free(c, cache_alloc_size());
	}
	return 0;
}

size_t sheaf_cache_object_size(const struct sheaf_cache *c)
{
	return c->object_size;
}

const char *sheaf_cache_name(const struct sheaf_cache *c)
{
	return c->name;
}
