/*
 * test_cache_api.c - slab caches and statistics through the public API.
 *
 * What it proves:
 *   - sheaf_cache_create() rejects a zero size, an alignment that is not a
 *     power of two (or above 4096) and unknown flags with NULL + EINVAL,
 *     copies the name (31 characters at most) and keeps the object size;
 *   - objects honour the alignment asked for (8 .. 4096 bytes, 64 with
 *     SHEAF_HWCACHE_ALIGN), are distinct, do not overlap and are writable
 *     in full, with and without SHEAF_NO_SHEAVES;
 *   - the constructor runs for every object before it is first handed out,
 *     not again for an object that comes back in its constructed state, and
 *     no more often than there are objects in the slabs;
 *   - bulk allocation of n gives n distinct, aligned, constructed objects,
 *     and bulk and single alloc/free mix;
 *   - destroying a cache with live objects fails with -1 / EBUSY, says so on
 *     stderr and leaves the cache usable; once everything is freed (even if
 *     it sits in another live thread's sheaves) it succeeds;
 *   - sheaf_cache_stats_get(), sheaf_stats_get() and sheaf_stats_foreach()
 *     count what the test did (objects active, allocations, frees, caches),
 *     foreach visits the malloc size-class caches and the user caches and
 *     lets its callback allocate; sheaf_stat_name() names each counter as
 *     sheaf.h's SHEAF_STAT_LIST does; sheaf_stats_print() writes the table.
 *
 * Also runs under memcheck with SHEAF_VALGRIND_QUICK set (it is small anyway).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sheaf.h"
#include "check.h"

static bool quick;

/* Keeps the compiler from dropping an allocation it sees freed unused. */
static void *hide(void *p)
{
	__asm__ volatile("" : "+r"(p) : : "memory");
	return p;
}

static bool aligned(const void *p, size_t align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
	return x < y ? -1 : x > y;
}

/* n objects of `size` bytes: none NULL, none overlapping.  Sorts a copy. */
static bool disjoint(void **objs, size_t n, size_t size)
{
	void **s = malloc(n * sizeof(void *));
	bool ok = true;

	REQUIRE(s != NULL);
	memcpy(s, objs, n * sizeof(void *));
	qsort(s, n, sizeof(void *), cmp_ptr);
	for (size_t i = 0; i < n; i++) {
		if (!s[i])
			ok = false;
		else if (i + 1 < n && (uintptr_t)s[i] + size > (uintptr_t)s[i + 1])
			ok = false;
	}
	free(s);
	return ok;
}

static void fill(void *p, size_t size, unsigned int seed)
{
	uint8_t *b = p;
	for (size_t i = 0; i < size; i++)
		b[i] = (uint8_t)(i * 31 + seed * 7 + 1);
}

static bool holds(const void *p, size_t size, unsigned int seed)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < size; i++)
		if (b[i] != (uint8_t)(i * 31 + seed * 7 + 1))
			return false;
	return true;
}

static struct sheaf_cache_stats cache_stats(struct sheaf_cache *c)
{
	struct sheaf_cache_stats st;
	memset(&st, 0, sizeof(st));
	sheaf_cache_stats_get(c, &st);
	return st;
}

static struct sheaf_stats stats(void)
{
	struct sheaf_stats s;
	memset(&s, 0, sizeof(s));
	sheaf_stats_get(&s);
	return s;
}

static uint64_t ev(const struct sheaf_cache_stats *st, enum sheaf_stat_item item)
{
	return st->events[item];
}

/* --------------------------------------------------------------- create -- */

static void test_create_errors(void)
{
	static const struct {
		size_t size, align;
		unsigned int flags;
	} bad[] = {
		{ 0, 0, 0 }, { 0, 64, 0 }, { 64, 3, 0 }, { 64, 24, 0 }, { 64, 48, 0 },
		{ 64, 8192, 0 }, { 64, 6, 0 }, { 64, 0, 0x80000000u }, { 64, 0, 0x100u },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		struct sheaf_cache *c = sheaf_cache_create("bad", bad[i].size, bad[i].align,
							   bad[i].flags, NULL);
		CHECKF(c == NULL && errno == EINVAL,
		       "sheaf_cache_create(size %zu, align %zu, flags %#x) = %p, errno %d",
		       bad[i].size, bad[i].align, bad[i].flags, (void *)c, errno);
		if (c)
			sheaf_cache_destroy(c);
	}

	/* The name is copied and cut to 31 characters. */
	char name[64];
	snprintf(name, sizeof(name), "a-cache-name-that-is-longer-than-31-characters");
	struct sheaf_cache *c = sheaf_cache_create(name, 40, 0, 0, NULL);
	REQUIRE(c != NULL);
	memset(name, 'x', sizeof(name) - 1);
	CHECKF(strcmp(sheaf_cache_name(c), "a-cache-name-that-is-longer-tha") == 0,
	       "sheaf_cache_name = \"%s\"", sheaf_cache_name(c));
	CHECK(sheaf_cache_object_size(c) == 40);
	struct sheaf_cache_stats st = cache_stats(c);
	CHECKF(strcmp(st.name, "a-cache-name-that-is-longer-tha") == 0, "stats name \"%.32s\"",
	       st.name);
	CHECK(sheaf_cache_destroy(c) == 0);

	/* A NULL free is ignored; create/destroy many times leaves no trace. */
	struct sheaf_stats s0 = stats();
	for (int i = 0; i < (quick ? 20 : 200); i++) {
		c = sheaf_cache_create("churn", (size_t)(8 + i % 300), 0, 0, NULL);
		REQUIRE(c != NULL);
		void *o = sheaf_cache_alloc(c);
		CHECK(o != NULL);
		sheaf_cache_free(c, o);
		sheaf_cache_free(c, NULL);
		CHECKF(sheaf_cache_destroy(c) == 0, "destroy of churn cache %d", i);
	}
	struct sheaf_stats s1 = stats();
	CHECKF(s1.caches == s0.caches, "caches %zu -> %zu after create/destroy churn", s0.caches,
	       s1.caches);
}

/* ----------------------------------------------------------- alignment -- */

static void exercise(const char *name, size_t size, size_t align, unsigned int flags,
		     size_t want_align)
{
	enum { N = 80 };
	void *o[N];
	struct sheaf_cache *c = sheaf_cache_create(name, size, align, flags, NULL);

	CHECKF(c != NULL, "create(%s, size %zu, align %zu, flags %#x) failed: errno %d", name, size,
	       align, flags, errno);
	if (!c)
		return;
	CHECK(sheaf_cache_object_size(c) == size);
	for (int i = 0; i < N; i++) {
		o[i] = sheaf_cache_alloc(c);
		CHECKF(o[i] && aligned(o[i], want_align), "%s: object %p not aligned to %zu", name,
		       o[i], want_align);
		if (o[i])
			fill(o[i], size, (unsigned int)i);
	}
	CHECKF(disjoint(o, N, size), "%s: objects overlap", name);
	for (int i = 0; i < N; i++)
		if (o[i])
			CHECKF(holds(o[i], size, (unsigned int)i), "%s: object %d changed", name,
			       i);
	struct sheaf_cache_stats st = cache_stats(c);
	CHECKF(st.objects_active == N, "%s: objects_active %zu, want %d", name, st.objects_active, N);
	CHECKF(st.object_size >= size, "%s: stats object_size %zu < %zu", name, st.object_size, size);
	if (flags & SHEAF_NO_SHEAVES)
		CHECKF(st.sheaf_capacity == 0, "%s: no-sheaves cache has sheaf_capacity %zu", name,
		       st.sheaf_capacity);
	/* Free in an order other than the allocation order. */
	for (int i = 0; i < N; i += 2)
		sheaf_cache_free(c, o[i]);
	for (int i = 1; i < N; i += 2)
		sheaf_cache_free(c, o[i]);
	st = cache_stats(c);
	CHECKF(st.objects_active == 0, "%s: objects_active %zu after freeing all", name,
	       st.objects_active);
	int rc = sheaf_cache_destroy(c);
	CHECKF(rc == 0, "%s: destroy = %d, errno %d", name, rc, errno);
}

static void test_alignment(void)
{
	char name[32];
	static const size_t sizes[] = { 1, 7, 8, 24, 100, 1000, 5000 };

	for (size_t align = 8; align <= 4096; align *= 2)
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			if (quick && sizes[s] > 1000)
				continue;
			snprintf(name, sizeof(name), "align%zu-size%zu", align, sizes[s]);
			exercise(name, sizes[s], align, 0, align);
		}
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		snprintf(name, sizeof(name), "natural-%zu", sizes[s]);
		exercise(name, sizes[s], 0, 0, 8);
		snprintf(name, sizeof(name), "hwcache-%zu", sizes[s]);
		exercise(name, sizes[s], 0, SHEAF_HWCACHE_ALIGN, 64);
		snprintf(name, sizeof(name), "hwcache16-%zu", sizes[s]);
		exercise(name, sizes[s], 16, SHEAF_HWCACHE_ALIGN, 64);
		snprintf(name, sizeof(name), "nosheaves-%zu", sizes[s]);
		exercise(name, sizes[s], 0, SHEAF_NO_SHEAVES, 8);
		snprintf(name, sizeof(name), "nosheaves-hw-%zu", sizes[s]);
		exercise(name, sizes[s], 256, SHEAF_NO_SHEAVES | SHEAF_HWCACHE_ALIGN, 256);
	}
	/* Objects larger than the largest malloc size class (32 KiB). */
	exercise("big-64k", 64 << 10, 4096, 0, 4096);
}

/* ------------------------------------------------------------ ctor ------ */

#define CTOR_MAGIC 0xc0ffee5eed5ca1e5ull

struct obj {
	uint64_t magic;
	uint64_t state;     /* 0 as constructed; the test sets it while in use */
	uint8_t payload[48];
};

static atomic_long ctor_calls;

static void obj_ctor(void *p)
{
	struct obj *o = p;
	o->magic = CTOR_MAGIC;
	o->state = 0;
	memset(o->payload, 0x5a, sizeof(o->payload));
	atomic_fetch_add(&ctor_calls, 1);
}

static bool constructed(const struct obj *o)
{
	if (o->magic != CTOR_MAGIC || o->state != 0)
		return false;
	for (size_t i = 0; i < sizeof(o->payload); i++)
		if (o->payload[i] != 0x5a)
			return false;
	return true;
}

static void test_ctor(void)
{
	enum { N = 700 };
	static struct obj *o[N];
	struct sheaf_cache *c = sheaf_cache_create("ctor", sizeof(struct obj), 0, 0, obj_ctor);

	REQUIRE(c != NULL);
	atomic_store(&ctor_calls, 0);
	for (int i = 0; i < N; i++) {
		o[i] = sheaf_cache_alloc(c);
		REQUIRE(o[i] != NULL);
		CHECKF(constructed(o[i]), "object %d (%p) not in constructed state at first alloc", i,
		       (void *)o[i]);
		o[i]->state = 1; /* in use */
	}
	CHECK(disjoint((void **)o, N, sizeof(struct obj)));
	long calls = atomic_load(&ctor_calls);
	struct sheaf_cache_stats st = cache_stats(c);
	CHECKF(calls >= N, "ctor ran %ld times for %d objects", calls, N);
	CHECKF((size_t)calls <= st.objects_total, "ctor ran %ld times for %zu objects in slabs",
	       calls, st.objects_total);

	/* Back in constructed state; they come out again without a new ctor run. */
	for (int i = 0; i < N; i++) {
		o[i]->state = 0;
		sheaf_cache_free(c, o[i]);
	}
	long before = atomic_load(&ctor_calls);
	for (int i = 0; i < N; i++) {
		o[i] = sheaf_cache_alloc(c);
		REQUIRE(o[i] != NULL);
		CHECKF(constructed(o[i]), "object %d not constructed on reuse", i);
	}
	CHECKF(atomic_load(&ctor_calls) == before,
	       "ctor ran %ld more times when %d freed objects were reallocated",
	       atomic_load(&ctor_calls) - before, N);

	/* Bulk allocation hands out constructed objects too. */
	static void *bulk[2 * N];
	size_t got = sheaf_cache_alloc_bulk(c, 2 * N, bulk);
	CHECKF(got == 2 * N, "alloc_bulk(%d) = %zu", 2 * N, got);
	for (size_t i = 0; i < got; i++)
		CHECKF(constructed(bulk[i]), "bulk object %zu not constructed", i);
	if (got)
		sheaf_cache_free_bulk(c, got, bulk);
	for (int i = 0; i < N; i++)
		sheaf_cache_free(c, o[i]);
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* --------------------------------------------------------------- bulk --- */

static void test_bulk(void)
{
	static const size_t counts[] = { 1, 2, 7, 64, 65, 500, 3000 };
	static void *objs[3000];
	const size_t size = 72, align = 32;
	struct sheaf_cache *c = sheaf_cache_create("bulk", size, align, 0, NULL);

	REQUIRE(c != NULL);
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		size_t n = counts[k];
		memset(objs, 0, sizeof(objs));
		errno = 0;
		size_t got = sheaf_cache_alloc_bulk(c, n, objs);
		CHECKF(got == n, "alloc_bulk(%zu) = %zu, errno %d", n, got, errno);
		if (got != n)
			continue;
		bool ok = true;
		for (size_t i = 0; i < n; i++) {
			ok &= objs[i] != NULL && aligned(objs[i], align);
			if (objs[i])
				fill(objs[i], size, (unsigned int)i);
		}
		CHECKF(ok, "alloc_bulk(%zu): NULL or misaligned object", n);
		CHECKF(disjoint(objs, n, size), "alloc_bulk(%zu): objects overlap", n);
		for (size_t i = 0; i < n; i++)
			ok &= holds(objs[i], size, (unsigned int)i);
		CHECKF(ok, "alloc_bulk(%zu): object contents overwritten", n);
		struct sheaf_cache_stats st = cache_stats(c);
		CHECKF(st.objects_active == n, "alloc_bulk(%zu): objects_active %zu", n,
		       st.objects_active);
		/* Half back one by one, the rest in bulk. */
		for (size_t i = 0; i < n / 2; i++)
			sheaf_cache_free(c, objs[i]);
		sheaf_cache_free_bulk(c, n - n / 2, objs + n / 2);
		st = cache_stats(c);
		CHECKF(st.objects_active == 0, "after free_bulk(%zu): objects_active %zu", n,
		       st.objects_active);
	}
	/* Singly allocated objects go back in bulk. */
	for (int i = 0; i < 100; i++) {
		objs[i] = sheaf_cache_alloc(c);
		REQUIRE(objs[i] != NULL);
	}
	sheaf_cache_free_bulk(c, 100, objs);
	CHECK(cache_stats(c).objects_active == 0);
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* ------------------------------------------------------------ destroy --- */

/* Calls sheaf_cache_destroy() with stderr going to a temporary file. */
static int destroy_capturing(struct sheaf_cache *c, int *err, long *stderr_bytes)
{
	FILE *tmp = tmpfile();
	REQUIRE(tmp != NULL);
	fflush(stderr);
	int saved = dup(2);
	REQUIRE(saved >= 0 && dup2(fileno(tmp), 2) == 2);
	errno = 0;
	int rc = sheaf_cache_destroy(c);
	*err = errno;
	fflush(stderr);
	REQUIRE(dup2(saved, 2) == 2);
	close(saved);
	*stderr_bytes = lseek(fileno(tmp), 0, SEEK_END);
	fclose(tmp);
	return rc;
}

struct holder {
	struct sheaf_cache *cache;  /* set by main before each round */
	pthread_barrier_t *barrier;
	int n, rounds;
};

/*
 * Each round: allocates and frees objects of the round's cache (they stay
 * in this thread's sheaves), then waits while main destroys the cache.  The
 * next round's cache likely reuses the dead one's slot (and address): the
 * per-thread state for it must start clean.
 */
static void *holder_main(void *arg)
{
	struct holder *h = arg;
	void **v = malloc((size_t)h->n * sizeof(void *));

	REQUIRE(v != NULL);
	for (int r = 0; r < h->rounds; r++) {
		pthread_barrier_wait(h->barrier); /* main created h->cache */
		for (int i = 0; i < h->n; i++) {
			v[i] = sheaf_cache_alloc(h->cache);
			REQUIRE(v[i] != NULL);
		}
		for (int i = 0; i < h->n; i++)
			sheaf_cache_free(h->cache, v[i]);
		pthread_barrier_wait(h->barrier); /* objects parked in our sheaves */
		pthread_barrier_wait(h->barrier); /* main destroyed the cache */
	}
	free(v);
	return NULL;
}

static void test_destroy(void)
{
	enum { N = 50 };
	void *o[N];
	int err;
	long bytes;
	struct sheaf_cache *c = sheaf_cache_create("busy", 128, 0, 0, NULL);

	REQUIRE(c != NULL);
	for (int i = 0; i < N; i++) {
		o[i] = sheaf_cache_alloc(c);
		REQUIRE(o[i] != NULL);
		fill(o[i], 128, (unsigned int)i);
	}
	for (int i = 1; i < N; i++)  /* one left live */
		sheaf_cache_free(c, o[i]);
	int rc = destroy_capturing(c, &err, &bytes);
	CHECKF(rc == -1 && err == EBUSY, "destroy with a live object = %d, errno %d", rc, err);
	CHECKF(bytes > 0, "destroy with a live object reported nothing on stderr");

	/* Still a cache: the live object is intact, new objects come and go. */
	CHECK(holds(o[0], 128, 0));
	CHECK(strcmp(sheaf_cache_name(c), "busy") == 0);
	for (int i = 1; i < N; i++) {
		o[i] = sheaf_cache_alloc(c);
		CHECK(o[i] != NULL && o[i] != o[0]);
	}
	CHECK(cache_stats(c).objects_active == N);
	for (int i = 1; i < N; i++)
		sheaf_cache_free(c, o[i]);
	rc = destroy_capturing(c, &err, &bytes);
	CHECKF(rc == -1 && err == EBUSY, "second destroy with a live object = %d, errno %d", rc,
	       err);
	CHECK(holds(o[0], 128, 0));
	sheaf_cache_free(c, o[0]);
	rc = sheaf_cache_destroy(c);
	CHECKF(rc == 0, "destroy after freeing everything = %d, errno %d", rc, errno);

	/* An empty cache that never allocated. */
	c = sheaf_cache_create("never-used", 16, 0, 0, NULL);
	REQUIRE(c != NULL);
	CHECK(sheaf_cache_destroy(c) == 0);

	/* Freed objects parked in another (live) thread's sheaves are taken back. */
	pthread_barrier_t barrier;
	pthread_t tid;
	static const size_t round_sizes[] = { 40, 40, 200, 40 };
	struct holder h = { NULL, &barrier, 300, 4 };
	REQUIRE(pthread_barrier_init(&barrier, NULL, 2) == 0);
	REQUIRE(pthread_create(&tid, NULL, holder_main, &h) == 0);
	for (int r = 0; r < h.rounds; r++) {
		char name[32];
		snprintf(name, sizeof(name), "held-%d", r);
		h.cache = sheaf_cache_create(name, round_sizes[r], 0, 0, NULL);
		REQUIRE(h.cache != NULL);
		pthread_barrier_wait(&barrier);
		pthread_barrier_wait(&barrier);
		struct sheaf_cache_stats st = cache_stats(h.cache);
		CHECKF(st.objects_active == 0, "%s: objects_active %zu with all freed", name,
		       st.objects_active);
		CHECKF(ev(&st, SHEAF_STAT_alloc_fast) + ev(&st, SHEAF_STAT_alloc_slow) == (size_t)h.n,
		       "%s: %llu allocations counted for %d", name,
		       (unsigned long long)(ev(&st, SHEAF_STAT_alloc_fast) +
					    ev(&st, SHEAF_STAT_alloc_slow)), h.n);
		rc = sheaf_cache_destroy(h.cache);
		CHECKF(rc == 0, "%s: destroy with freed objects in another live thread's sheaves = %d, "
		       "errno %d", name, rc, errno);
		pthread_barrier_wait(&barrier);
	}
	REQUIRE(pthread_join(tid, NULL) == 0); /* its exit must not touch the dead caches */
	pthread_barrier_destroy(&barrier);

	/* Life goes on: a new cache works from a new thread. */
	REQUIRE(pthread_barrier_init(&barrier, NULL, 2) == 0);
	h.rounds = 1;
	h.cache = sheaf_cache_create("held-again", 40, 0, 0, NULL);
	REQUIRE(h.cache != NULL);
	REQUIRE(pthread_create(&tid, NULL, holder_main, &h) == 0);
	pthread_barrier_wait(&barrier);
	pthread_barrier_wait(&barrier);
	pthread_barrier_wait(&barrier);
	REQUIRE(pthread_join(tid, NULL) == 0);
	pthread_barrier_destroy(&barrier);
	CHECK(cache_stats(h.cache).objects_active == 0);
	CHECK(sheaf_cache_destroy(h.cache) == 0);
}

/* ------------------------------------------------------------- stats ---- */

struct visit {
	size_t visited;
	size_t user_seen;          /* our user caches found by name */
	size_t class_with_100;     /* size-class caches holding our 100 B block */
	size_t class_with_5000;
	size_t other;              /* caches that are not ours */
	bool bad_entry;
	const char *user_names[2];
	size_t user_sizes[2];
};

static void visit_cb(const struct sheaf_cache_stats *st, void *arg)
{
	struct visit *v = arg;

	v->visited++;
	/* The callback may allocate. */
	free(hide(malloc(32 + v->visited)));
	if (memchr(st->name, '\0', sizeof(st->name)) == NULL || st->name[0] == '\0' ||
	    st->objects_active > st->objects_total || st->object_size == 0)
		v->bad_entry = true;
	for (int i = 0; i < 2; i++)
		if (strcmp(st->name, v->user_names[i]) == 0) {
			v->user_seen++;
			if (st->object_size < v->user_sizes[i] || st->objects_active != 1)
				v->bad_entry = true;
			return;
		}
	v->other++;
	if (st->object_size >= 100 && st->object_size <= 128 && st->objects_active >= 1)
		v->class_with_100++;
	if (st->object_size >= 5000 && st->object_size <= 6144 && st->objects_active >= 1)
		v->class_with_5000++;
}

static void test_stats(void)
{
	enum { K = 37 };
	void *o[K];
	struct sheaf_stats g0 = stats();
	struct sheaf_cache *c = sheaf_cache_create("stats", 200, 0, 0, NULL);
	struct sheaf_cache *n = sheaf_cache_create("stats-nosheaves", 24, 0, SHEAF_NO_SHEAVES, NULL);

	REQUIRE(c != NULL && n != NULL);
	struct sheaf_stats g1 = stats();
	CHECKF(g1.caches == g0.caches + 2, "caches %zu -> %zu after creating 2", g0.caches,
	       g1.caches);

	/* Single allocations and frees, each counted once as fast or slow. */
	struct sheaf_cache_stats a = cache_stats(c);
	CHECK(strcmp(a.name, "stats") == 0);
	CHECK(a.object_size >= 200 && a.objects_per_slab >= 1);
	CHECKF(a.slab_bytes >= a.objects_per_slab * a.object_size,
	       "slab_bytes %zu < %zu objects x %zu", a.slab_bytes, a.objects_per_slab,
	       a.object_size);
	CHECK(a.objects_active == 0);
	for (int i = 0; i < K; i++) {
		o[i] = sheaf_cache_alloc(c);
		REQUIRE(o[i] != NULL);
	}
	struct sheaf_stats g2 = stats();
	struct sheaf_cache_stats b = cache_stats(c);
	CHECKF(b.objects_active == K, "objects_active %zu, want %d", b.objects_active, K);
	CHECK(b.slabs >= 1 && b.objects_total >= K);
	CHECKF(b.objects_total == b.slabs * b.objects_per_slab,
	       "objects_total %zu != %zu slabs x %zu", b.objects_total, b.slabs, b.objects_per_slab);
	uint64_t allocs = ev(&b, SHEAF_STAT_alloc_fast) + ev(&b, SHEAF_STAT_alloc_slow) -
			  ev(&a, SHEAF_STAT_alloc_fast) - ev(&a, SHEAF_STAT_alloc_slow);
	CHECKF(allocs == K, "alloc_fast + alloc_slow grew by %llu for %d allocations",
	       (unsigned long long)allocs, K);
	if (!(sheaf_build_flags() & SHEAF_BUILD_TINY))   /* tiny builds have no sheaves */
		CHECKF(b.sheaf_capacity > 0, "a cache with sheaves reports sheaf_capacity 0");
	CHECKF(g2.allocs - g1.allocs >= K, "sheaf_stats allocs grew by %llu for %d cache objects",
	       (unsigned long long)(g2.allocs - g1.allocs), K);
	for (int i = 0; i < K; i++)
		sheaf_cache_free(c, o[i]);
	struct sheaf_stats g3 = stats();
	struct sheaf_cache_stats d = cache_stats(c);
	uint64_t frees = ev(&d, SHEAF_STAT_free_fast) + ev(&d, SHEAF_STAT_free_slow) -
			 ev(&b, SHEAF_STAT_free_fast) - ev(&b, SHEAF_STAT_free_slow);
	CHECKF(frees == K, "free_fast + free_slow grew by %llu for %d frees",
	       (unsigned long long)frees, K);
	CHECK(d.objects_active == 0);
	CHECKF(g3.frees - g2.frees >= K, "sheaf_stats frees grew by %llu for %d cache objects",
	       (unsigned long long)(g3.frees - g2.frees), K);
	CHECKF((int64_t)(g3.allocs - g3.frees) == (int64_t)(g1.allocs - g1.frees),
	       "live count moved across alloc/free of cache objects");
	CHECK(ev(&d, SHEAF_STAT_free_invalid) == 0);

	/* Without sheaves: capacity 0, no sheaf traffic. */
	void *x = sheaf_cache_alloc(n);
	REQUIRE(x != NULL);
	struct sheaf_cache_stats ns = cache_stats(n);
	CHECK(ns.sheaf_capacity == 0);
	CHECK(ns.objects_active == 1);
	CHECKF(ev(&ns, SHEAF_STAT_alloc_fast) == 0 && ev(&ns, SHEAF_STAT_sheaf_refill) == 0,
	       "no-sheaves cache: alloc_fast %llu, sheaf_refill %llu",
	       (unsigned long long)ev(&ns, SHEAF_STAT_alloc_fast),
	       (unsigned long long)ev(&ns, SHEAF_STAT_sheaf_refill));

	/* foreach: every cache once, size classes and ours. */
	void *m100 = hide(malloc(100)), *m5000 = hide(malloc(5000));
	void *y = sheaf_cache_alloc(c);
	REQUIRE(m100 && m5000 && y);
	struct visit v = { .user_names = { "stats", "stats-nosheaves" }, .user_sizes = { 200, 24 } };
	sheaf_stats_foreach(visit_cb, &v);
	struct sheaf_stats g4 = stats();
	CHECKF(v.visited == g4.caches, "foreach visited %zu caches, stats say %zu", v.visited,
	       g4.caches);
	CHECKF(v.user_seen == 2, "foreach found %zu of our 2 caches", v.user_seen);
	CHECKF(v.other >= 2, "foreach visited only %zu caches besides ours", v.other);
	CHECKF(v.class_with_100 >= 1, "no size-class cache holds a live 100-byte block");
	CHECKF(v.class_with_5000 >= 1, "no size-class cache holds a live 5000-byte block");
	CHECK(!v.bad_entry);
	free(m100);
	free(m5000);
	sheaf_cache_free(c, y);
	sheaf_cache_free(n, x);

	/* sheaf_stats_print writes the table, our caches included. */
	FILE *f = tmpfile();
	REQUIRE(f != NULL);
	sheaf_stats_print(f);
	fflush(f);
	long len = ftell(f);
	char *text = calloc(1, (size_t)len + 1);
	REQUIRE(text != NULL);
	rewind(f);
	size_t got = fread(text, 1, (size_t)len, f);
	text[got] = '\0';
	CHECKF(len > 0 && strstr(text, "stats-nosheaves") != NULL,
	       "sheaf_stats_print output (%ld bytes) lacks our cache", len);
	free(text);
	fclose(f);

	CHECK(sheaf_cache_destroy(c) == 0);
	CHECK(sheaf_cache_destroy(n) == 0);
	struct sheaf_stats g5 = stats();
	CHECKF(g5.caches == g0.caches, "caches %zu -> %zu after destroying ours", g0.caches,
	       g5.caches);

	/* Counter names, as in SHEAF_STAT_LIST. */
	CHECK(strcmp(sheaf_stat_name(SHEAF_STAT_barn_get), "barn_get") == 0);
#define CHECK_NAME(name, doc)                                                          \
	CHECKF(sheaf_stat_name(SHEAF_STAT_##name) &&                                   \
		       strcmp(sheaf_stat_name(SHEAF_STAT_##name), #name) == 0,         \
	       "sheaf_stat_name(SHEAF_STAT_" #name ") = \"%s\"",                       \
	       sheaf_stat_name(SHEAF_STAT_##name) ? sheaf_stat_name(SHEAF_STAT_##name) : "(null)");
	SHEAF_STAT_LIST(CHECK_NAME)
#undef CHECK_NAME
}

/* ------------------------------------------------- threads and caches --- */

struct sharer {
	struct sheaf_cache *cache;
	void **mine;      /* objects this thread allocates ... */
	void **theirs;    /* ... and those it frees (the other thread's) */
	int n;
	pthread_barrier_t *barrier;
};

static void *sharer_main(void *arg)
{
	struct sharer *s = arg;
	for (int round = 0; round < (quick ? 2 : 20); round++) {
		for (int i = 0; i < s->n; i++) {
			s->mine[i] = sheaf_cache_alloc(s->cache);
			REQUIRE(s->mine[i] != NULL);
			fill(s->mine[i], 56, (unsigned int)i);
		}
		pthread_barrier_wait(s->barrier);
		bool ok = true;
		for (int i = 0; i < s->n; i++) {
			ok &= holds(s->theirs[i], 56, (unsigned int)i);
			sheaf_cache_free(s->cache, s->theirs[i]);
		}
		if (!ok)
			fprintf(stderr, "sharer: an object of the other thread was overwritten\n");
		REQUIRE(ok);
		pthread_barrier_wait(s->barrier);
	}
	return NULL;
}

static void test_threads(void)
{
	enum { N = 400 };
	static void *a[N], *b[N];
	pthread_barrier_t barrier;
	pthread_t t1, t2;
	struct sheaf_cache *c = sheaf_cache_create("shared", 56, 8, 0, NULL);

	REQUIRE(c != NULL);
	REQUIRE(pthread_barrier_init(&barrier, NULL, 2) == 0);
	struct sharer s1 = { c, a, b, N, &barrier }, s2 = { c, b, a, N, &barrier };
	REQUIRE(pthread_create(&t1, NULL, sharer_main, &s1) == 0);
	REQUIRE(pthread_create(&t2, NULL, sharer_main, &s2) == 0);
	REQUIRE(pthread_join(t1, NULL) == 0);
	REQUIRE(pthread_join(t2, NULL) == 0);
	pthread_barrier_destroy(&barrier);
	struct sheaf_cache_stats st = cache_stats(c);
	CHECKF(st.objects_active == 0, "shared: objects_active %zu after cross-thread frees",
	       st.objects_active);
	CHECKF(sheaf_cache_destroy(c) == 0, "destroy of a cache used by two exited threads");
}

int main(void)
{
	quick = getenv("SHEAF_VALGRIND_QUICK") != NULL;

	test_create_errors();
	test_alignment();
	test_ctor();
	test_bulk();
	test_destroy();
	test_stats();
	test_threads();
	return check_done("test_cache_api");
}
