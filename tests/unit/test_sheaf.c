/*
 * test_sheaf.c - per-thread sheaves, the barn, the malloc fast paths.
 *
 * What it proves:
 *   - one thread allocating and freeing far more objects than a sheaf holds
 *     goes to the slow path once per sheaf of objects, and each slow path
 *     takes the cheapest source in the documented order (sheaf.c header):
 *     spare sheaf, then the barn, then the slabs.  The counters of
 *     sheaf_cache_stats_get() move exactly as that order implies
 *     (alloc_fast/alloc_slow, free_fast/free_slow, sheaf_refill,
 *     sheaf_flush, sheaf_swap, barn_get/barn_put and their _fail,
 *     sheaf_alloc), and objects_active returns to 0;
 *   - the barn never holds more full sheaves than the barn_full option, nor
 *     more empty ones than barn_empty; with barn_full=0 it keeps about a
 *     MiB of objects (8..256 sheaves) and parks up to 8x that (1024 at
 *     most), flushing the excess (barn_decay) once it has been over its keep
 *     for barn_decay_ms, and not before (ms_elapsed(): a stamp ahead of the
 *     clock is no time);
 *   - a producer thread allocating and a consumer thread freeing the same
 *     objects pass whole sheaves through the barn (barn_put and barn_get
 *     both happen), every object arrives intact and is handed out once at a
 *     time, and the final accounting is exact (allocs == frees == M,
 *     objects_active 0, the cache can be destroyed);
 *   - a thread that exits with objects cached in its sheaves hands them
 *     back: after pthread_join objects_active is 0, every free object of
 *     the cache is in the barn or in the slabs' bitmaps, and allocating as
 *     many objects again in the next thread creates no slab;
 *   - an allocation that fails for lack of memory (page_fail_next) returns
 *     NULL / ENOMEM and is not counted as an allocation;
 *   - malloc_fast()/free_fast() (fastpath.h) for every size 0..32768 give a
 *     block of the size class (do_usable_size() >= the request), aligned to
 *     16 from 16 bytes up (8 below), from a slab of the right kmalloc cache;
 *     free_fast() leaves the free marker set, malloc_fast() handing the
 *     block out again clears it; a block that holds the marker's top byte
 *     (all the fast path tests) but not the marker is freed by the slow
 *     path without a diagnostic; and a second free_fast() of a block is
 *     diagnosed (abort_on_error off) and does not put it in a sheaf twice,
 *     for a small class (marker in the block) and a page-sized one (marker
 *     beside the slab header);
 *   - realloc headroom: a block that grows a second time in a row gets a
 *     class larger than its request but at most twice it, keeps its
 *     contents, then grows and shrinks back in place; a block whose previous
 *     growth was not the thread's last gets its exact class;
 *   - a block growing a second time in a row to a page or more moves to
 *     a mapping when one is at hand (the thread's freed large block), and
 *     then grows in place (or by mremap) with its contents; with none at
 *     hand it stays in a slab class;
 *   - realloc() of a freed block or an interior pointer, to a size that
 *     would stay in place, is refused (EINVAL) after a diagnostic;
 *   - blocks of a page or more that the program never writes stay
 *     non-resident through malloc_fast()/free_fast() (mincore): the marker
 *     does not touch them.
 */
#include "fastpath.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../check.h"
#include "cache_stats.h"


/* ---------------------------------------------------- one thread, counts */

/*
 * With a barn bound of B full sheaves, capacity `cap` and N = K * cap
 * objects (K > B + 2), starting from nothing:
 *   allocating N: one slow path per sheaf (K), each finding no spare and
 *     no full sheaf in the barn (barn_get_fail), so refilling from slabs;
 *     one sheaf is allocated;
 *   freeing N: the first sheaf fills main, the next slow free makes main
 *     the spare and takes a new sheaf; the next B slow frees give a full
 *     sheaf to the barn for a new empty one; the rest find the barn at its
 *     bound (barn_put_fail) and flush to slabs.  K - 1 slow frees.
 *     Left: main and spare full, B full sheaves in the barn;
 *   allocating N again: main serves the first sheaf without a slow path,
 *     then the spare is swapped in, then B exchanges with the barn
 *     (barn_get), then refills from slabs (barn_get_fail).  K - 1 slow.
 */
static void test_counts(void)
{
	const unsigned int B = 4, K = 24;
	unsigned int saved_full = sheaf_opt.barn_full, saved_empty = sheaf_opt.barn_empty;
	sheaf_opt.barn_full = B;
	sheaf_opt.barn_empty = B / 2;   /* fewer than the exchanges below park */
	struct sheaf_cache *c = sheaf_cache_create("test-counts", 64, 0, 0, NULL);
	REQUIRE(c != NULL);
	const unsigned int cap = c->sheaf_capacity;
	if (!cap) {
		CHECK(config_tiny);
		sheaf_cache_destroy(c);
		return;
	}
	const unsigned int N = K * cap;
	void **objs = calloc(N, sizeof(void *));
	REQUIRE(objs != NULL);

	struct sheaf_cache_stats s0 = snap(c);
	for (unsigned int i = 0; i < N; i++) {
		objs[i] = sheaf_cache_alloc(c);
		REQUIRE(objs[i] != NULL);
		*(unsigned int *)objs[i] = i;
	}
	struct sheaf_cache_stats s1 = snap(c);
	CHECKF(DELTA(s0, s1, alloc_slow) == K, "alloc_slow %llu, want %u",
	       (unsigned long long)DELTA(s0, s1, alloc_slow), K);
	CHECK(DELTA(s0, s1, alloc_fast) == N - K);
	CHECK(DELTA(s0, s1, sheaf_refill) == K);
	CHECK(DELTA(s0, s1, barn_get_fail) == K);
	CHECK(DELTA(s0, s1, barn_get) == 0);
	CHECK(DELTA(s0, s1, sheaf_alloc) == 1);
	CHECK(DELTA(s0, s1, slab_direct) == 0);
	CHECK(DELTA(s0, s1, slab_alloc) == (N + c->objects_per_slab - 1) / c->objects_per_slab);
	CHECKF(s1.objects_active == N, "objects_active %zu, want %u", s1.objects_active, N);

	size_t max_full = 0;
	for (unsigned int i = 0; i < N; i++) {
		CHECK(*(unsigned int *)objs[i] == i);
		sheaf_cache_free(c, objs[i]);
		if (i % cap == 1) {
			struct sheaf_cache_stats st = snap(c);
			max_full = st.barn_full > max_full ? st.barn_full : max_full;
		}
	}
	CHECKF(max_full <= B, "barn held %zu full sheaves, barn_full=%u", max_full, B);
	struct sheaf_cache_stats s2 = snap(c);
	CHECKF(DELTA(s1, s2, free_slow) == K - 1, "free_slow %llu, want %u",
	       (unsigned long long)DELTA(s1, s2, free_slow), K - 1);
	CHECK(DELTA(s1, s2, free_fast) == N - (K - 1));
	CHECK(DELTA(s1, s2, sheaf_alloc) == 1 + B);
	CHECKF(DELTA(s1, s2, barn_put) == B, "barn_put %llu, want %u",
	       (unsigned long long)DELTA(s1, s2, barn_put), B);
	CHECK(DELTA(s1, s2, barn_put_fail) == K - 2 - B);
	CHECK(DELTA(s1, s2, sheaf_flush) == K - 2 - B);
	CHECK(DELTA(s1, s2, sheaf_swap) == 0);
	CHECKF(s2.barn_full == B && s2.barn_empty == 0, "barn: %zu full, %zu empty", s2.barn_full,
	       s2.barn_empty);
	CHECKF(s2.objects_active == 0, "objects_active %zu after freeing all", s2.objects_active);

	for (unsigned int i = 0; i < N; i++) {
		objs[i] = sheaf_cache_alloc(c);
		REQUIRE(objs[i] != NULL);
	}
	struct sheaf_cache_stats s3 = snap(c);
	CHECK(DELTA(s2, s3, alloc_slow) == K - 1);
	CHECK(DELTA(s2, s3, alloc_fast) == N - (K - 1));
	CHECK(DELTA(s2, s3, sheaf_swap) == 1);
	CHECKF(DELTA(s2, s3, barn_get) == B, "barn_get %llu, want %u",
	       (unsigned long long)DELTA(s2, s3, barn_get), B);
	CHECK(DELTA(s2, s3, barn_get_fail) == K - 2 - B);
	CHECK(DELTA(s2, s3, sheaf_refill) == K - 2 - B);
	CHECK(s3.barn_full == 0);
	/* Each exchange parks an empty sheaf, but no more than barn_empty. */
	CHECKF(s3.barn_empty <= sheaf_opt.barn_empty, "barn holds %zu empty sheaves, barn_empty=%u",
	       s3.barn_empty, sheaf_opt.barn_empty);
	CHECK(s3.objects_active == N);

	for (unsigned int i = 0; i < N; i++)
		sheaf_cache_free(c, objs[i]);
	struct sheaf_cache_stats s4 = snap(c);
	CHECK(s4.objects_active == 0);
	CHECK(s4.barn_full <= B);
	CHECK(EV(s4, alloc_fast) + EV(s4, alloc_slow) == 2ull * N);
	CHECK(EV(s4, free_fast) + EV(s4, free_slow) == 2ull * N);
	CHECK(EV(s4, free_invalid) == 0);
	CHECK(sheaf_cache_destroy(c) == 0);
	free(objs);
	sheaf_opt.barn_full = saved_full;
	sheaf_opt.barn_empty = saved_empty;
}

static void alloc_then_free(struct sheaf_cache *c, void **objs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		objs[i] = sheaf_cache_alloc(c);
		REQUIRE(objs[i] != NULL);
	}
	for (size_t i = 0; i < n; i++)
		sheaf_cache_free(c, objs[i]);
}

/* The decay clocks' differences: a stamp ahead of the clock (barn.c rounds
 * its stamp up to mark it set) is no time at all, not 49 days; the clock
 * wrapping is not either.  With the plain unsigned difference, barns
 * flushed their burst sheaves on the 8th put whenever the coarse clock's
 * readings were even (test_default_barn_bound failed for minutes on end). */
static void test_ms_elapsed(void)
{
	CHECK(ms_elapsed(1000, 1001) == 0);
	CHECK(ms_elapsed(1001, 1000) == 1);
	CHECK(ms_elapsed(1000, 1000) == 0);
	CHECK(ms_elapsed(3, 0xfffffffeu) == 5);   /* across the wrap */
	uint32_t now = coarse_ms();
	CHECK(ms_elapsed(now, now | 1) == 0);
}

/* With barn_full=0 a barn keeps about 1 MiB of objects (8..256 sheaves) and
 * parks up to 8x that (1024 at most) until barn_decay_ms has passed. */
static void test_default_barn_bound(void)
{
	unsigned int saved = sheaf_opt.barn_full, saved_decay = sheaf_opt.barn_decay_ms;
	sheaf_opt.barn_full = 0;
	static const size_t sizes[] = { 32, 512, 8192 };
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		struct sheaf_cache *c = sheaf_cache_create("test-barn", sizes[k], 0, 0, NULL);
		REQUIRE(c != NULL);
		size_t cap = c->sheaf_capacity;
		if (!cap) {
			sheaf_cache_destroy(c);
			continue;
		}
		size_t sheaf_bytes = cap * c->size;
		size_t keep = (1u << 20) / sheaf_bytes;
		keep = keep < 8 ? 8 : keep > BARN_KEEP_MAX ? BARN_KEEP_MAX : keep;
		size_t bound = keep * 8 < BARN_PARK_MAX ? keep * 8 : BARN_PARK_MAX;
		/* Enough objects to fill the barn and two sheaves more. */
		size_t n = (bound + 4) * cap;
		void **objs = malloc(n * sizeof(void *));
		REQUIRE(objs != NULL);
		alloc_then_free(c, objs, n);
		struct sheaf_cache_stats st = snap(c);
		CHECKF(st.barn_full == bound && EV(st, barn_put_fail) > 0,
		       "size %zu (sheaf of %zu B): barn holds %zu full sheaves, want %zu, %llu put_fail",
		       sizes[k], sheaf_bytes, st.barn_full, bound,
		       (unsigned long long)EV(st, barn_put_fail));
		CHECK(st.objects_active == 0);

		/* Over its keep for barn_decay_ms: the next puts flush the
		 * excess to the slabs. */
		if (bound > keep + 16) {
			sheaf_opt.barn_decay_ms = 20;
			nanosleep(&(struct timespec){ 0, 60 * 1000 * 1000 }, NULL);
			alloc_then_free(c, objs, 16 * cap);   /* 16 sheaves out and back */
			struct sheaf_cache_stats s2 = snap(c);
			CHECKF(EV(s2, barn_decay) > 0 && s2.barn_full <= keep + 16,
			       "size %zu: after the decay time the barn holds %zu full sheaves (keep %zu), %llu decayed",
			       sizes[k], s2.barn_full, keep, (unsigned long long)EV(s2, barn_decay));
			CHECK(s2.objects_active == 0);
			sheaf_opt.barn_decay_ms = saved_decay;
		}
		CHECK(sheaf_cache_destroy(c) == 0);
		free(objs);
	}
	sheaf_opt.barn_full = saved;
}

/* ---------------------------------------------------- producer/consumer */

enum { RING = 256 };

struct ring {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	void *slot[RING];
	unsigned int head, tail;   /* head - tail = queued */
	bool bad;                  /* written by the consumer only */
	struct sheaf_cache *c;
	unsigned int total;
};

struct obj {
	unsigned int seq;
	unsigned int check;
	char pad[40];
};

static void *producer(void *arg)
{
	struct ring *r = arg;
	for (unsigned int i = 0; i < r->total; i++) {
		struct obj *o = sheaf_cache_alloc(r->c);
		REQUIRE(o != NULL);   /* exits: the consumer would wait forever */
		o->seq = i;
		o->check = ~i;
		memset(o->pad, (int)(i & 0xff), sizeof(o->pad));
		pthread_mutex_lock(&r->lock);
		while (r->head - r->tail == RING)
			pthread_cond_wait(&r->cond, &r->lock);
		r->slot[r->head++ % RING] = o;
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->lock);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct ring *r = arg;
	for (unsigned int i = 0; i < r->total; i++) {
		pthread_mutex_lock(&r->lock);
		while (r->head == r->tail)
			pthread_cond_wait(&r->cond, &r->lock);
		struct obj *o = r->slot[r->tail++ % RING];
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->lock);
		if (o->seq != i || o->check != ~i || o->pad[0] != (char)(i & 0xff) ||
		    o->pad[sizeof(o->pad) - 1] != (char)(i & 0xff))
			r->bad = true;
		sheaf_cache_free(r->c, o);
	}
	return NULL;
}

static void test_producer_consumer(void)
{
	static struct ring r;
	pthread_mutex_init(&r.lock, NULL);
	pthread_cond_init(&r.cond, NULL);
	r.c = sheaf_cache_create("test-pc", sizeof(struct obj), 0, 0, NULL);
	REQUIRE(r.c != NULL);
	r.total = 12000;
	unsigned long threads0 = threads_count();
	pthread_t p, q;
	REQUIRE(pthread_create(&q, NULL, consumer, &r) == 0);
	REQUIRE(pthread_create(&p, NULL, producer, &r) == 0);
	pthread_join(p, NULL);
	pthread_join(q, NULL);
	CHECK(!r.bad);
	CHECK(threads_count() == threads0);
	struct sheaf_cache_stats st = snap(r.c);
	CHECKF(EV(st, alloc_fast) + EV(st, alloc_slow) == r.total, "allocs %llu, want %u",
	       (unsigned long long)(EV(st, alloc_fast) + EV(st, alloc_slow)), r.total);
	CHECKF(EV(st, free_fast) + EV(st, free_slow) == r.total, "frees %llu, want %u",
	       (unsigned long long)(EV(st, free_fast) + EV(st, free_slow)), r.total);
	CHECK(st.objects_active == 0);
	CHECK(EV(st, free_invalid) == 0);
	if (st.sheaf_capacity) {
		/* Sheaves travelled from the consumer to the producer (from
		 * another node's barn when the two have different homes). */
		CHECKF(EV(st, barn_put) > 0 && EV(st, barn_get) + EV(st, barn_get_remote) > 0,
		       "barn_put %llu barn_get %llu barn_get_remote %llu",
		       (unsigned long long)EV(st, barn_put), (unsigned long long)EV(st, barn_get),
		       (unsigned long long)EV(st, barn_get_remote));
		CHECK(st.barn_full <= r.c->barn_max_full);
		CHECKF(EV(st, alloc_slow) * st.sheaf_capacity >= r.total &&
		       EV(st, alloc_slow) <= r.total / st.sheaf_capacity * 2 + 4,
		       "alloc_slow %llu for %u objects, sheaves of %zu",
		       (unsigned long long)EV(st, alloc_slow), r.total, st.sheaf_capacity);
	}
	CHECK(sheaf_cache_destroy(r.c) == 0);
	pthread_cond_destroy(&r.cond);
	pthread_mutex_destroy(&r.lock);
}

/* ------------------------------------------------------------ thread exit */

struct exit_arg {
	struct sheaf_cache *c;
	unsigned int n;
	bool ok;
};

static void *alloc_free_exit(void *arg)
{
	struct exit_arg *a = arg;
	void **objs = malloc(a->n * sizeof(void *));
	a->ok = objs != NULL;
	for (unsigned int i = 0; a->ok && i < a->n; i++)
		a->ok = (objs[i] = sheaf_cache_alloc(a->c)) != NULL;
	for (unsigned int i = 0; a->ok && i < a->n; i++)
		sheaf_cache_free(a->c, objs[i]);
	/* Some malloc classes too: their sheaves go back as well. */
	for (unsigned int i = 0; a->ok && i < a->n; i++)
		objs[i] = malloc_fast(24);
	for (unsigned int i = 0; a->ok && i < a->n; i++)
		free_fast(objs[i], "test");
	free(objs);
	return NULL;   /* everything cached in this thread's sheaves */
}

/* Free objects the slabs of `c` hold in their bitmaps. */
static size_t slab_free_objects(struct sheaf_cache *c)
{
	size_t n = 0;
	for (unsigned int k = 0; k < sheaf_nr_nodes; k++) {
		struct cache_node *node = &c->node[k];
		lock_acquire(&node->lock);
		for (struct slab *s = node->partial; s; s = s->next)
			n += s->objects - s->inuse;
		for (struct slab *s = node->empty; s; s = s->next)
			n += s->objects - s->inuse;
		lock_release(&node->lock);
	}
	return n;
}

static void test_thread_exit(void)
{
	struct sheaf_cache *c = sheaf_cache_create("test-exit", 64, 0, 0, NULL);
	REQUIRE(c != NULL);
	struct exit_arg a = { c, c->sheaf_capacity ? 3 * c->sheaf_capacity + 5 : 100, false };
	struct sheaf_cache *k24 = &kmalloc_caches[size_to_class(24)];
	struct sheaf_cache_stats k0 = snap(k24);
	unsigned long threads0 = threads_count();
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, alloc_free_exit, &a) == 0);
	pthread_join(t, NULL);
	CHECK(a.ok);
	CHECK(threads_count() == threads0);

	struct sheaf_cache_stats st = snap(c);
	CHECKF(st.objects_active == 0, "objects_active %zu after the thread exited",
	       st.objects_active);
	CHECK(EV(st, alloc_fast) + EV(st, alloc_slow) == a.n);
	CHECK(EV(st, free_fast) + EV(st, free_slow) == a.n);
	/* Nothing is stranded: every object of the slabs is free either in
	 * the barn's full sheaves or in the bitmaps. */
	size_t in_barn = st.barn_full * st.sheaf_capacity;
	size_t in_slabs = slab_free_objects(c);
	CHECKF(in_barn + in_slabs == st.objects_total,
	       "%zu objects in barn + %zu in slabs, %zu in the cache's slabs", in_barn, in_slabs,
	       st.objects_total);
	CHECK(in_barn + in_slabs >= a.n);
	struct sheaf_cache_stats k1 = snap(k24);
	CHECKF(k1.objects_active == k0.objects_active, "kmalloc-%u: objects_active %zu -> %zu",
	       class_size[size_to_class(24)], k0.objects_active, k1.objects_active);

	/* Allocating as many again in the next thread (whose home is the
	 * exited thread's node: the least used) needs no new slab. */
	uint64_t slabs0 = EV(st, slab_alloc);
	REQUIRE(pthread_create(&t, NULL, alloc_free_exit, &a) == 0);
	pthread_join(t, NULL);
	CHECK(a.ok);
	st = snap(c);
	CHECKF(EV(st, slab_alloc) == slabs0, "%llu new slabs after the thread's exit",
	       (unsigned long long)(EV(st, slab_alloc) - slabs0));
	CHECK(st.objects_active == 0);
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* -------------------------------------------------------------- ENOMEM */

static void test_enomem(void)
{
	/* The largest objects: 1 MiB slabs, so the page source runs out of
	 * address space it already has after at most a few dozen slabs. */
	static const unsigned int flags[] = { 0, SHEAF_NO_SHEAVES };
	for (size_t k = 0; k < 2; k++) {
		struct sheaf_cache *c = sheaf_cache_create("test-enomem", CACHE_OBJ_MAX, 0, flags[k],
							   NULL);
		REQUIRE(c != NULL);
		enum { MAX = 4096 };
		static void *objs[MAX];
		unsigned int n = 0;
		page_fail_next(1u << 30);
		errno = 0;
		while (n < MAX && (objs[n] = sheaf_cache_alloc(c)) != NULL)
			n++;
		int err = errno;
		page_fail_next(0);
		if (n == MAX) {
			CHECKF(n < MAX, "flags %#x: no allocation failed with mmap failing", flags[k]);
		} else {
			CHECKF(err == ENOMEM, "flags %#x: failed allocation: errno %d", flags[k], err);
			struct sheaf_cache_stats st = snap(c);
			CHECKF(st.objects_active == n,
			       "flags %#x: objects_active %zu after %u allocations and one failure",
			       flags[k], st.objects_active, n);
			/* It works again once memory is back. */
			objs[n] = sheaf_cache_alloc(c);
			CHECK(objs[n] != NULL);
			if (objs[n])
				n++;
		}
		for (unsigned int i = 0; i < n; i++)
			sheaf_cache_free(c, objs[i]);
		struct sheaf_cache_stats st = snap(c);
		CHECKF(st.objects_active == 0, "flags %#x: objects_active %zu after freeing everything",
		       flags[k], st.objects_active);
		CHECK(sheaf_cache_destroy(c) == 0);
	}
}

/* --------------------------------------------------------- malloc paths */

static void test_malloc_fast(void)
{
	unsigned long bad = 0;
	for (size_t n = 0; n <= SMALL_MAX; n++) {
		void *p = malloc_fast(n);
		unsigned int cls = size_to_class(n);
		const struct slab *s = p ? (const struct slab *)pagemap_lookup((uintptr_t)p) : NULL;
		size_t usable = do_usable_size(p);
		size_t want_align = n >= 16 ? 16 : 8;
		bool ok = p && s && !((uintptr_t)s & PM_TAG_LARGE) && s->cache == &kmalloc_caches[cls] &&
			  usable >= n && usable == class_size[cls] && (uintptr_t)p % want_align == 0 &&
			  !obj_marked_free(&kmalloc_caches[cls], p);
		if (!ok && bad++ < 10)
			CHECKF(ok, "malloc_fast(%zu) = %p: usable %zu, class %u", n, p, usable,
			       class_size[cls]);
		if (p) {
			if (n)
				((char *)p)[n - 1] = 1;
			free_fast(p, "test");
		}
	}
	CHECKF(bad == 0, "%lu sizes failed", bad);

	/* Many live at once: distinct, and usable in full. */
	enum { LIVE = 700 };
	static void *live[LIVE];
	for (int i = 0; i < LIVE; i++) {
		size_t n = (size_t)i * 47 % (SMALL_MAX + 1);
		live[i] = malloc_fast(n);
		REQUIRE(live[i] != NULL);
		memset(live[i], i & 0xff, n);
	}
	for (int i = 0; i < LIVE; i++) {
		size_t n = (size_t)i * 47 % (SMALL_MAX + 1);
		const unsigned char *b = live[i];
		CHECK(n == 0 || (b[0] == (i & 0xff) && b[n - 1] == (i & 0xff)));
		free_fast(live[i], "test");
	}

	/* The free marker and LIFO reuse. */
	for (size_t n = 8; n <= SMALL_MAX; n *= 4) {
		struct sheaf_cache *c = &kmalloc_caches[size_to_class(n)];
		void *p = malloc_fast(n);
		REQUIRE(p != NULL);
		CHECK(!obj_marked_free(c, p));
		free_fast(p, "test");
		CHECKF(obj_marked_free(c, p), "size %zu: no free marker after free_fast", n);
		void *q = malloc_fast(n);
		CHECKF(q == p, "size %zu: malloc_fast after free_fast gave %p, not %p", n, q, p);
		CHECK(!obj_marked_free(c, q));
		free_fast(q, "test");
	}

	/* The fast paths test the marker's top byte alone (a byte in
	 * 0xf8..0xfe); a block that holds it there, but not the marker, is
	 * freed normally by the slow path's whole-word compare: nothing
	 * diagnosed, the block handed out again. */
	CHECKF((sheaf_free_key >> 56) >= 0xf8 && (sheaf_free_key >> 56) <= 0xfe, "key's top byte %#x",
	       (unsigned int)(sheaf_free_key >> 56));
	for (size_t n = 8; n <= 2048; n *= 4) {
		struct sheaf_cache *c = &kmalloc_caches[size_to_class(n)];
		struct sheaf_cache_stats s0 = snap(c);
		uintptr_t *p = malloc_fast(n);
		REQUIRE(p != NULL);
		*p = free_marker(p) ^ 0xff;   /* the marker's top byte, not the marker */
		CHECK(marker_maybe_free(p, p) && !obj_marked_free(c, p));
		free_fast(p, "test");
		struct sheaf_cache_stats s1 = snap(c);
		CHECKF(DELTA(s0, s1, free_invalid) == 0 &&
		       DELTA(s0, s1, free_slow) + DELTA(s0, s1, free_fast) == 1 && obj_marked_free(c, p),
		       "size %zu: a block with the marker's top byte was not freed (free_invalid %llu)",
		       n, (unsigned long long)DELTA(s0, s1, free_invalid));
		void *q = malloc_fast(n);
		CHECKF(q == p, "size %zu: the block was not handed out again", n);
		free_fast(q, "test");
	}

	/* A double free on the fast path is caught by the marker, in the
	 * block (100 B) or beside the slab header (8 KiB). */
	sheaf_opt.abort_on_error = false;
	static const size_t df_sizes[] = { 100, 8192 };
	for (size_t k = 0; k < 2; k++) {
		size_t n = df_sizes[k];
		struct sheaf_cache *c = &kmalloc_caches[size_to_class(n)];
		CHECK(c->ext_marks == (n >= PAGE_SIZE));
		struct sheaf_cache_stats s0 = snap(c);
		void *p = malloc_fast(n);
		REQUIRE(p != NULL);
		free_fast(p, "test");
		fprintf(stderr, "test_sheaf: expect a double free diagnostic (%zu B):\n", n);
		free_fast(p, "test");
		struct sheaf_cache_stats s1 = snap(c);
		CHECKF(DELTA(s0, s1, free_invalid) == 1, "size %zu: double free not counted", n);
		void *x = malloc_fast(n), *y = malloc_fast(n);
		CHECKF(x && y && x != y && (x == p || y == p), "after a double free: %p %p (p %p)", x, y, p);
		free_fast(x, "test");
		free_fast(y, "test");
		struct sheaf_cache_stats s2 = snap(c);
		CHECK(s2.objects_active == s0.objects_active);
	}
	sheaf_opt.abort_on_error = true;
}

static bool all_bytes(const unsigned char *p, size_t from, size_t to, unsigned char v)
{
	for (size_t i = from; i < to; i++)
		if (p[i] != v)
			return false;
	return true;
}

static void test_realloc_headroom(void)
{
	unsigned char *p = malloc_fast(100);
	REQUIRE(p);
	memset(p, 1, 100);
	p = do_realloc(p, 200, "test");   /* first growth: the exact class */
	REQUIRE(p);
	CHECK(do_usable_size(p) == class_size[size_to_class(200)]);
	memset(p + 100, 2, 100);
	unsigned char *q = do_realloc(p, 400, "test");   /* again: headroom */
	REQUIRE(q);
	size_t u = do_usable_size(q);
	CHECKF(u > class_size[size_to_class(400)] && u <= 800, "second growth to 400: usable %zu", u);
	CHECK(all_bytes(q, 0, 100, 1) && all_bytes(q, 100, 200, 2));
	memset(q + 200, 3, 200);
	CHECK(do_realloc(q, u, "test") == q);     /* grows into the room */
	CHECK(do_realloc(q, 400, "test") == q);   /* and back: stays put */
	CHECK(all_bytes(q, 0, 100, 1) && all_bytes(q, 100, 200, 2) && all_bytes(q, 200, 400, 3));
	free_fast(q, "test");

	/* a grows, b grows, a grows again: a was not the last grown block. */
	unsigned char *a = malloc_fast(100), *b = malloc_fast(100);
	REQUIRE(a && b);
	a = do_realloc(a, 300, "test");
	b = do_realloc(b, 300, "test");
	REQUIRE(a && b);
	a = do_realloc(a, 600, "test");
	REQUIRE(a);
	CHECKF(do_usable_size(a) == class_size[size_to_class(600)], "usable %zu", do_usable_size(a));
	free_fast(a, "test");
	free_fast(b, "test");
}

static bool is_mapping(const void *p)
{
	return (pagemap_lookup((uintptr_t)p) & PM_TAG_LARGE) != 0;
}

/* A block appended to again that reaches a page moves to a mapping when one
 * is at hand (the thread's slot or the cache), else to a slab class. */
static void test_realloc_to_pages(void)
{
	large_trim();   /* nothing at hand */
	unsigned char *p = malloc_fast(1000);
	REQUIRE(p);
	memset(p, 1, 1000);
	p = do_realloc(p, 3000, "test");
	REQUIRE(p);
	p = do_realloc(p, 5000, "test");
	REQUIRE(p);
	CHECKF(!is_mapping(p), "grown to 5000 B with no mapping at hand: %p is a mapping", p);
	CHECK(all_bytes(p, 0, 1000, 1));
	free_fast(p, "test");

	void *spare = malloc_fast(65536);   /* freed: the thread's slot */
	REQUIRE(spare);
	free_fast(spare, "test");
	p = malloc_fast(1000);
	REQUIRE(p);
	memset(p, 2, 1000);
	p = do_realloc(p, 2000, "test");
	REQUIRE(p);
	memset(p + 1000, 3, 1000);
	unsigned char *q = do_realloc(p, 5000, "test");
	REQUIRE(q);
	CHECKF(q == spare && is_mapping(q), "grown to 5000 B beside a free 64 KiB mapping: %p (mapping %p)",
	       (void *)q, spare);
	CHECK(all_bytes(q, 0, 1000, 2) && all_bytes(q, 1000, 2000, 3));
	memset(q + 2000, 4, 3000);
	CHECK(do_realloc(q, 60000, "test") == q);   /* in place, within the mapping */
	memset(q + 5000, 5, 55000);
	CHECK(do_realloc(q, 40000, "test") == q);   /* a shrink by less than half */
	p = do_realloc(q, 200000, "test");          /* beyond it: mremap */
	REQUIRE(p);
	CHECK(all_bytes(p, 0, 1000, 2) && all_bytes(p, 1000, 2000, 3) && all_bytes(p, 2000, 5000, 4) &&
	      all_bytes(p, 5000, 40000, 5));
	p = do_realloc(p, 100, "test");             /* a small size again: a slab */
	REQUIRE(p);
	CHECK(!is_mapping(p) && all_bytes(p, 0, 100, 2));
	free_fast(p, "test");
}

/* realloc() of a freed block or an interior pointer within its class's
 * size (the in-place path) is diagnosed and fails, as free() would be. */
static void test_realloc_bad_in_place(void)
{
	sheaf_opt.abort_on_error = false;
	static const size_t sizes[] = { 100, 8192, 100000 };
	for (size_t k = 0; k < 3; k++) {
		size_t n = sizes[k];
		unsigned char *p = malloc_fast(n);
		REQUIRE(p);
		fprintf(stderr, "test_sheaf: expect an interior pointer diagnostic (%zu B):\n", n);
		errno = 0;
		CHECKF(do_realloc(p + 16, n - 16, "test") == NULL && errno == EINVAL,
		       "realloc of an interior pointer (%zu B) not refused", n);
		free_fast(p, "test");   /* a large one: the thread's slot keeps it */
		fprintf(stderr, "test_sheaf: expect a double free diagnostic (%zu B):\n", n);
		errno = 0;
		CHECKF(do_realloc(p, n, "test") == NULL && errno == EINVAL,
		       "realloc of a freed block (%zu B) not refused", n);
	}
	sheaf_opt.abort_on_error = true;
}

/* 16 KiB blocks from a fresh slab, never written by "the program": the
 * allocator's marker writes must not make their pages resident. */
static void test_untouched_pages(void)
{
	enum { N = 32 };
	void *b[N];
	for (int i = 0; i < N; i++) {
		b[i] = malloc_fast(16384);
		REQUIRE(b[i] != NULL);
	}
	for (int i = 0; i < N; i++)
		free_fast(b[i], "test");
	int resident = 0;
	for (int i = 0; i < N; i++) {
		unsigned char vec[4];
		REQUIRE(mincore(b[i], 16384, vec) == 0);
		for (int k = 0; k < 4; k++)
			resident += vec[k] & 1;
	}
	CHECKF(resident == 0, "%d of %d pages of never-written 16 KiB blocks resident after malloc/free",
	       resident, N * 4);
}

int main(void)
{
	sheaf_init();
	test_untouched_pages();   /* first: the 16 KiB class's slabs are fresh */
	test_counts();
	test_ms_elapsed();
	test_default_barn_bound();
	test_producer_consumer();
	test_thread_exit();
	test_enomem();
	test_malloc_fast();
	test_realloc_headroom();
	test_realloc_to_pages();
	test_realloc_bad_in_place();
	return check_done("test_sheaf");
}
