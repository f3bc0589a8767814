/*
 * test_rcu_api.c - what rcu_free(), rcu_free_mightsleep(), rcu_free_barrier()
 * and sheaf_cache_rcu_barrier() promise (api/sheaf/rcu.h), apart from the
 * grace-period safety itself (test_rcu_safety) and fork (test_rcu_fork).
 *
 * What it proves, each part in a re-executed child ("--case NAME") so that
 * SHEAF_OPTIONS is read at start-up as a real program would:
 *   semantics (rcu_delay_ms=600000, so that nothing is collected by the
 *   timer and whatever is freed was freed by the barrier):
 *     - rcu_free(NULL, field) and rcu_free_mightsleep(NULL) do nothing;
 *     - rcu_free_barrier() frees objects sitting in OTHER threads' partly
 *       filled rcu sheaves: a thread rcu_free()s 3 objects and blocks on a
 *       condition variable; nothing is freed until main calls the barrier,
 *       then rcu_pending is 0 and rcu_objects_freed grew by exactly 3;
 *     - sheaf_cache_rcu_barrier(c) frees c's objects, wherever they wait
 *       (c's objects_active drops to 0 once everything else is freed);
 *     - sheaf_cache_destroy(c) with rcu_free()'d objects of c still pending
 *       (in another live thread's sheaf) waits for them and returns 0;
 *     - a thread that rcu_free()s and exits leaves nothing behind: after
 *       join + barrier everything is freed;
 *     - callers registered with liburcu (online and offline) and
 *       unregistered ones all work; rcu_free_mightsleep() works and is
 *       deferred (batched) rather than waiting for a grace period per
 *       call: its objects are still allocated until the barrier and count
 *       in rcu_objects_freed (a tiny build, which does not batch, waits
 *       and frees at once, uncounted, as the kernel's KVFREE_RCU_BATCHED=n);
 *     - counters: free_rcu_sheaf counts rcu_free() of small malloc objects,
 *       a full sheaf goes to the barn or the slabs after its grace period
 *       (rcu_sheaf_barn + rcu_sheaf_flush), a cache without sheaves counts
 *       free_rcu_sheaf_fail, large objects use no sheaf, rcu_fallback counts
 *       field links (none while memory for arrays can be had; in a tiny
 *       build every rcu_free() from an unregistered thread);
 *     - memory returns: live = allocs - frees (sheaf_stats_get) is back at
 *       its value before a phase of mallocs, cache allocations and rcu_frees
 *       once rcu_free_barrier() returned.
 *   timer (rcu_delay_ms=30, the default): a partly filled rcu sheaf is freed within a
 *     few seconds without any barrier ("collected after rcu_delay_ms"),
 *     both before the drain thread ever ran and after it went idle.
 *   idle_barrier (a fresh process): rcu_free_barrier(),
 *     sheaf_cache_rcu_barrier() and sheaf_cache_destroy() in a process that
 *     never deferred a free return 0 without starting the drain thread (no
 *     new thread, none named sheaf-rcu); then the first deferred free of the
 *     process is an rcu_free_nolock() from a signal handler, which cannot
 *     start the drain thread itself, and rcu_free_barrier() still frees it.
 *   online_barrier: rcu_free_barrier() called by a thread that is registered
 *     and online (outside any rcu_read_lock(), as liburcu's own
 *     synchronize_rcu() and rcu_barrier() allow in QSBR) returns 0 instead
 *     of waiting for itself forever.
 *   bad input (default options: SIGABRT and one line on stderr naming the
 *     address): rcu_free() of a stack object and of a global
 *     ("sheaf: rcu_free(): invalid pointer"), of an interior pointer (small
 *     and large: "interior pointer"), of an object already freed
 *     ("double free"; for a large block "already freed" is accepted too).
 *   double_rcu (abort_on_error=0): the same object rcu_free()'d twice is
 *     diagnosed when the batch is processed ("double free", printed during
 *     rcu_free_barrier()), counted once in rcu_objects_freed (it was freed
 *     once), and the process goes on and exits 0; the same for a large
 *     object and for an object of a cache without sheaves (pointer arrays).
 *   settle (abort_on_error=0): a full rcu sheaf goes to the barn as it is
 *     after its grace period, its objects unwritten (the drain thread does
 *     not touch them); the thread that takes it writes their free markers;
 *     an object free()d again (by another thread, which keeps it in its
 *     sheaf) while its sheaf waits in the barn is found then ("rcu_free():
 *     double free"), handed out only once, counted out of
 *     rcu_objects_freed, and the accounting ends exact.
 * Every child arms alarm(), so a hang fails instead of blocking the suite.
 * Nothing depends on timing except bounded waits with generous limits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "sheaf.h"
#include "sheaf/rcu.h"
#include "check.h"

#define ANNOUNCE "rcu-api: passing "
#define SURVIVED "rcu-api: survived the bad call"
#define BEFORE_BARRIER "rcu-api: calling rcu_free_barrier()"
#define AFTER_BARRIER "rcu-api: rcu_free_barrier() returned"
#define CHILD_ALARM 30

/* 64-byte malloc objects (kmalloc-64), with an 8-byte rcu_ptr (16 in a
 * tiny build) at offset 8: the canary stays at offset 0. */
#define OBJ_BYTES 64
struct obj {
	uint64_t canary;
	struct rcu_ptr rp;
	uint64_t data[4];
};
_Static_assert(sizeof(struct obj) <= OBJ_BYTES, "struct obj fits the kmalloc-64 class");

/* User-cache objects: rcu_head at 16. */
struct cobj {
	uint64_t canary;
	uint64_t x;
	struct rcu_head rh;
	uint64_t data[5];
};

/* Large objects (> 32 KiB): the field 50000 bytes in. */
struct lobj {
	uint64_t canary;
	char pad[50000 - 8];
	struct rcu_ptr rp;
	char pad2[20000];
};
_Static_assert(offsetof(struct lobj, rp) == 50000, "field far inside a large object");

/* Variable-sized malloc objects: only the head is typed. */
struct vobj {
	uint64_t canary;
	struct rcu_ptr rp;
};

static bool tiny;

/* Keeps the compiler from reasoning about (or warning on) the bad calls. */
static void *hide(void *p)
{
	__asm__ volatile("" : "+r"(p) : : "memory");
	return p;
}

static void say(const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = write(2, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void announce(const void *p)
{
	char buf[64];
	snprintf(buf, sizeof(buf), ANNOUNCE "0x%lx\n", (unsigned long)(uintptr_t)p);
	say(buf);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static struct obj *obj_new(void)
{
	struct obj *o = malloc(OBJ_BYTES);
	REQUIRE(o);
	o->canary = 0xc0ffee;
	return o;
}

static struct cobj *cobj_new(struct sheaf_cache *c)
{
	struct cobj *o = sheaf_cache_alloc(c);
	REQUIRE(o);
	o->canary = 0xcafe;
	return o;
}

static struct lobj *lobj_new(void)
{
	struct lobj *o = malloc(sizeof(*o));
	REQUIRE(o);
	o->canary = 0x1a26e;
	return o;
}

/* ------------------------------------------------------------ stats */
static struct sheaf_stats stats(void)
{
	struct sheaf_stats s;
	sheaf_stats_get(&s);
	return s;
}

static uint64_t live(const struct sheaf_stats *s)
{
	return s->allocs - s->frees;
}

struct find_cache {
	const char *name;
	struct sheaf_cache_stats st;
	bool found;
};

static void find_cb(const struct sheaf_cache_stats *st, void *arg)
{
	struct find_cache *f = arg;
	if (strcmp(st->name, f->name) == 0) {
		f->st = *st;
		f->found = true;
	}
}

/* An event counter of the cache called `name` (e.g. "kmalloc-64"). */
static uint64_t cache_event(const char *name, enum sheaf_stat_item item)
{
	struct find_cache f;
	memset(&f, 0, sizeof(f));
	f.name = name;
	sheaf_stats_foreach(find_cb, &f);
	REQUIRE(f.found);
	return f.st.events[item];
}

static void sum_cb(const struct sheaf_cache_stats *st, void *arg)
{
	uint64_t *v = arg;   /* v[0] = item, v[1] = sum */
	v[1] += st->events[v[0]];
}

/* An event counter summed over every cache. */
static uint64_t event_total(enum sheaf_stat_item item)
{
	uint64_t v[2] = { (uint64_t)item, 0 };
	sheaf_stats_foreach(sum_cb, v);
	return v[1];
}

/*
 * live (allocs - frees) once it equals `want`, or after 2 s.  Settling is
 * needed in a tiny build only: liburcu's rcu_barrier() allocates work items
 * that its call_rcu thread frees just after the barrier returned.
 */
static uint64_t settled_live(uint64_t want)
{
	struct sheaf_stats s = stats();
	for (int ms = 0; live(&s) != want && ms < 2000; ms += 10) {
		sleep_ms(10);
		s = stats();
	}
	return live(&s);
}

/* live once it has not changed for 60 ms (bounded): a baseline that no
 * liburcu clean-up is still moving. */
static uint64_t stable_live(void)
{
	struct sheaf_stats s = stats();
	uint64_t last = live(&s);
	for (int same = 0, ms = 0; same < 3 && ms < 2000; ms += 20) {
		sleep_ms(20);
		s = stats();
		same = live(&s) == last ? same + 1 : 0;
		last = live(&s);
	}
	return last;
}

static size_t active(struct sheaf_cache *c)
{
	struct sheaf_cache_stats st;
	sheaf_cache_stats_get(c, &st);
	return st.objects_active;
}

/* ---------------------------------------------- threads that block */
/*
 * A thread that runs `work` and then blocks on a condition variable
 * without exiting, so that whatever it left in its rcu sheaves stays
 * there, until park_release().
 */
struct parked {
	void (*work)(void *arg);
	void *arg;
	pthread_mutex_t m;
	pthread_cond_t cv;
	int state;   /* 0 working, 1 parked, 2 released */
	pthread_t tid;
};

static void *parked_main(void *p)
{
	struct parked *k = p;
	k->work(k->arg);
	pthread_mutex_lock(&k->m);
	k->state = 1;
	pthread_cond_broadcast(&k->cv);
	while (k->state != 2)
		pthread_cond_wait(&k->cv, &k->m);
	pthread_mutex_unlock(&k->m);
	return NULL;
}

static void park_start(struct parked *k, void (*work)(void *), void *arg)
{
	k->work = work;
	k->arg = arg;
	k->state = 0;
	pthread_mutex_init(&k->m, NULL);
	pthread_cond_init(&k->cv, NULL);
	REQUIRE(pthread_create(&k->tid, NULL, parked_main, k) == 0);
	pthread_mutex_lock(&k->m);
	while (k->state != 1)
		pthread_cond_wait(&k->cv, &k->m);
	pthread_mutex_unlock(&k->m);
}

static void park_release(struct parked *k)
{
	pthread_mutex_lock(&k->m);
	k->state = 2;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->m);
	REQUIRE(pthread_join(k->tid, NULL) == 0);
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->m);
}

/* What a worker thread rcu_free()s. */
struct work {
	int small;                  /* struct obj (kmalloc-64) */
	struct sheaf_cache *c1;
	int n1;
	struct sheaf_cache *c2;
	int n2;
	int large;                  /* struct lobj */
	int mightsleep;             /* small objects via rcu_free_mightsleep() */
};

static void do_work(void *arg)
{
	const struct work *w = arg;
	for (int i = 0; i < w->small; i++) {
		struct obj *o = obj_new();
		rcu_free(o, rp);
	}
	for (int i = 0; i < w->n1; i++) {
		struct cobj *o = cobj_new(w->c1);
		rcu_free(o, rh);
	}
	for (int i = 0; i < w->n2; i++) {
		struct cobj *o = cobj_new(w->c2);
		rcu_free(o, rh);
	}
	for (int i = 0; i < w->large; i++) {
		struct lobj *o = lobj_new();
		rcu_free(o, rp);
	}
	for (int i = 0; i < w->mightsleep; i++)
		rcu_free_mightsleep(obj_new());
}

static void *do_work_thread(void *arg)
{
	do_work(arg);
	return NULL;
}

/* A registered thread: rcu_free() while online and while offline. */
static void *registered_thread(void *arg)
{
	(void)arg;
	rcu_register_thread();
	for (int i = 0; i < 5; i++) {
		struct obj *o = obj_new();
		rcu_free(o, rp);
	}
	rcu_quiescent_state();
	rcu_thread_offline();
	for (int i = 0; i < 5; i++) {
		struct obj *o = obj_new();
		rcu_free(o, rp);
	}
	rcu_thread_online();
	rcu_unregister_thread();
	return NULL;
}

/* ================================================ case: semantics ==== */
static void semantics_null(void)
{
	uint64_t l0 = stable_live();
	struct sheaf_stats s0 = stats();
	struct obj *none = hide(NULL);
	rcu_free(none, rp);
	rcu_free_mightsleep(hide(NULL));
	CHECK(rcu_free_barrier() == 0);
	struct sheaf_stats s1 = stats();
	uint64_t l1 = settled_live(l0);
	CHECKF(s1.rcu_objects_freed == s0.rcu_objects_freed && s1.rcu_pending == 0 &&
	       s1.rcu_fallback == s0.rcu_fallback && l1 == l0,
	       "rcu_free(NULL) changed the counters (freed +%llu, pending %llu, live %llu -> %llu)",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed),
	       (unsigned long long)s1.rcu_pending, (unsigned long long)l0, (unsigned long long)l1);
}

/* Objects in another thread's partly filled rcu sheaf. */
static void semantics_steal(void)
{
	struct work w = { .small = 3 };
	struct parked k;
	uint64_t sheaf0 = cache_event("kmalloc-64", SHEAF_STAT_free_rcu_sheaf);
	struct sheaf_stats s0 = stats();
	park_start(&k, do_work, &w);

	sleep_ms(200);   /* the timer would have fired by now with the default delay */
	struct sheaf_stats s1 = stats();
	CHECKF(s1.rcu_objects_freed == s0.rcu_objects_freed,
	       "objects freed before any barrier with rcu_delay_ms=600000 (+%llu)",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed));

	int r = rcu_free_barrier();
	struct sheaf_stats s2 = stats();
	CHECKF(r == 0, "rcu_free_barrier() returned %d", r);
	CHECKF(s2.rcu_pending == 0, "rcu_pending %llu after the barrier",
	       (unsigned long long)s2.rcu_pending);
	CHECKF(s2.rcu_objects_freed - s0.rcu_objects_freed == 3,
	       "the barrier freed %llu of the 3 objects in the other thread's partial sheaf",
	       (unsigned long long)(s2.rcu_objects_freed - s0.rcu_objects_freed));
	if (!tiny) {
		uint64_t d = cache_event("kmalloc-64", SHEAF_STAT_free_rcu_sheaf) - sheaf0;
		CHECKF(d == 3, "kmalloc-64 free_rcu_sheaf grew by %llu, expected 3",
		       (unsigned long long)d);
	}
	park_release(&k);
}

/* sheaf_cache_rcu_barrier(c): c's objects, in another thread and here. */
static void semantics_cache_barrier(void)
{
	struct sheaf_cache *c = sheaf_cache_create("rcu_api_c", sizeof(struct cobj), 0, 0, NULL);
	struct sheaf_cache *d = sheaf_cache_create("rcu_api_d", sizeof(struct cobj), 0, 0, NULL);
	REQUIRE(c && d);
	struct work w = { .c1 = c, .n1 = 5, .c2 = d, .n2 = 4 };
	struct parked k;
	park_start(&k, do_work, &w);
	for (int i = 0; i < 2; i++) {
		struct cobj *o = cobj_new(c);
		rcu_free(o, rh);
	}
	CHECKF(active(c) == 7, "cache c: %zu objects active before the barrier, expected 7",
	       active(c));
	int r = sheaf_cache_rcu_barrier(c);
	CHECKF(r == 0, "sheaf_cache_rcu_barrier() returned %d", r);
	CHECKF(active(c) == 0, "cache c: %zu objects still active after sheaf_cache_rcu_barrier(c)",
	       active(c));
	printf("  after sheaf_cache_rcu_barrier(c): cache d has %zu of 4 objects still active\n",
	       active(d));
	CHECK(rcu_free_barrier() == 0);
	CHECKF(active(d) == 0, "cache d: %zu objects still active after rcu_free_barrier()",
	       active(d));
	park_release(&k);
	CHECK(sheaf_cache_destroy(c) == 0);
	CHECK(sheaf_cache_destroy(d) == 0);
}

/* sheaf_cache_destroy() waits for the rcu_free()s of its objects. */
static void semantics_destroy(void)
{
	struct sheaf_cache *e = sheaf_cache_create("rcu_api_e", sizeof(struct cobj), 0, 0, NULL);
	REQUIRE(e);
	struct work w = { .c1 = e, .n1 = 6 };
	struct parked k;
	struct sheaf_stats s0 = stats();
	park_start(&k, do_work, &w);
	for (int i = 0; i < 3; i++) {
		struct cobj *o = cobj_new(e);
		rcu_free(o, rh);
	}
	int r = sheaf_cache_destroy(e);
	CHECKF(r == 0, "sheaf_cache_destroy() with pending rcu_free()s returned %d (errno %d)", r,
	       errno);
	struct sheaf_stats s1 = stats();
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == 9,
	       "rcu_objects_freed grew by %llu over the destroy, expected 9",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed));
	park_release(&k);
}

/* A thread that rcu_free()s and exits. */
static void semantics_thread_exit(void)
{
	struct sheaf_cache *f = sheaf_cache_create("rcu_api_f", sizeof(struct cobj), 0, 0, NULL);
	REQUIRE(f);
	struct work w = { .small = 10, .c1 = f, .n1 = 3, .large = 2, .mightsleep = 2 };
	struct sheaf_stats s0 = stats();
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, do_work_thread, &w) == 0);
	REQUIRE(pthread_join(t, NULL) == 0);
	int r = rcu_free_barrier();
	struct sheaf_stats s1 = stats();
	uint64_t freed = s1.rcu_objects_freed - s0.rcu_objects_freed;
	CHECKF(r == 0, "rcu_free_barrier() returned %d", r);
	CHECKF(s1.rcu_pending == 0, "rcu_pending %llu after join + barrier",
	       (unsigned long long)s1.rcu_pending);
	/* Tiny: rcu_free_mightsleep() frees synchronously, uncounted. */
	CHECKF(freed == 17 || (tiny && freed == 15),
	       "after an exited thread's rcu_free()s: rcu_objects_freed +%llu, expected 17",
	       (unsigned long long)freed);
	CHECKF(active(f) == 0, "cache f: %zu objects active after the thread exited + barrier",
	       active(f));
	CHECKF(s1.large_allocs == s0.large_allocs, "large allocations: %zu live, %zu before",
	       s1.large_allocs, s0.large_allocs);
	CHECK(sheaf_cache_destroy(f) == 0);
}

static void semantics_registered(void)
{
	struct sheaf_stats s0 = stats();
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, registered_thread, NULL) == 0);
	REQUIRE(pthread_join(t, NULL) == 0);
	CHECK(rcu_free_barrier() == 0);
	struct sheaf_stats s1 = stats();
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == 10,
	       "registered (online + offline) thread: rcu_objects_freed +%llu, expected 10",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed));
	CHECK(s1.rcu_pending == 0);
}

static void semantics_mightsleep(void)
{
	uint64_t l0 = stable_live();
	struct sheaf_stats s0 = stats();
	for (int i = 0; i < 3; i++)
		rcu_free_mightsleep(obj_new());
	rcu_free_mightsleep(lobj_new());
	/* Deferred, not a grace period waited per call (rcu_delay_ms is
	 * 600000: only the barrier frees them). */
	struct sheaf_stats sm = stats();
	CHECKF(tiny || (live(&sm) == l0 + 4 && sm.rcu_objects_freed == s0.rcu_objects_freed),
	       "rcu_free_mightsleep() x 4: live blocks %llu -> %llu, rcu_objects_freed +%llu "
	       "before any barrier (expected +4 live, +0 freed: deferred, not waited for)",
	       (unsigned long long)l0, (unsigned long long)live(&sm),
	       (unsigned long long)(sm.rcu_objects_freed - s0.rcu_objects_freed));
	CHECK(rcu_free_barrier() == 0);
	struct sheaf_stats s1 = stats();
	uint64_t l1 = settled_live(l0);
	CHECKF(l1 == l0 && s1.frees - s0.frees >= 4,
	       "rcu_free_mightsleep(): live blocks %llu after the barrier, %llu before (frees +%llu)",
	       (unsigned long long)l1, (unsigned long long)l0,
	       (unsigned long long)(s1.frees - s0.frees));
	CHECKF(s1.large_allocs == s0.large_allocs, "the large block was not freed");
	CHECKF(tiny || s1.rcu_objects_freed - s0.rcu_objects_freed == 4,
		       "rcu_free_mightsleep(): rcu_objects_freed +%llu, expected 4",
		       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed));
}

static void semantics_counters(void)
{
	/* Full sheaves of kmalloc-64: three of them, then the barrier. */
	struct find_cache fc;
	memset(&fc, 0, sizeof(fc));
	fc.name = "kmalloc-64";
	sheaf_stats_foreach(find_cb, &fc);
	REQUIRE(fc.found);
	size_t cap = fc.st.sheaf_capacity;
	if (!tiny) {
		CHECK(cap > 0);
		uint64_t sh0 = cache_event("kmalloc-64", SHEAF_STAT_free_rcu_sheaf);
		uint64_t done0 = cache_event("kmalloc-64", SHEAF_STAT_rcu_sheaf_barn) +
				 cache_event("kmalloc-64", SHEAF_STAT_rcu_sheaf_flush);
		struct sheaf_stats s0 = stats();
		for (size_t i = 0; i < 3 * cap; i++) {
			struct obj *o = obj_new();
			rcu_free(o, rp);
		}
		CHECK(rcu_free_barrier() == 0);
		struct sheaf_stats s1 = stats();
		uint64_t sh = cache_event("kmalloc-64", SHEAF_STAT_free_rcu_sheaf) - sh0;
		uint64_t done = cache_event("kmalloc-64", SHEAF_STAT_rcu_sheaf_barn) +
				cache_event("kmalloc-64", SHEAF_STAT_rcu_sheaf_flush) - done0;
		CHECKF(sh == 3 * cap, "free_rcu_sheaf +%llu for %zu rcu_free()s of small objects",
		       (unsigned long long)sh, 3 * cap);
		CHECKF(done == 3, "rcu_sheaf_barn + rcu_sheaf_flush +%llu for 3 full sheaves",
		       (unsigned long long)done);
		CHECK(s1.rcu_grace_periods > s0.rcu_grace_periods);
		CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == 3 * cap,
		       "rcu_objects_freed +%llu, expected %zu",
		       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed), 3 * cap);
	}

	/* Large objects: no sheaf of any cache is involved. */
	uint64_t all_sheaf0 = event_total(SHEAF_STAT_free_rcu_sheaf);
	uint64_t all_fail0 = event_total(SHEAF_STAT_free_rcu_sheaf_fail);
	struct sheaf_stats s0 = stats();
	for (int i = 0; i < 4; i++) {
		struct lobj *o = lobj_new();
		rcu_free(o, rp);
	}
	CHECK(rcu_free_barrier() == 0);
	struct sheaf_stats s1 = stats();
	CHECKF(event_total(SHEAF_STAT_free_rcu_sheaf) == all_sheaf0 &&
	       event_total(SHEAF_STAT_free_rcu_sheaf_fail) == all_fail0,
	       "rcu_free() of large objects counted on a cache's rcu sheaf");
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == 4, "large: rcu_objects_freed +%llu",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed));
	CHECK(s1.large_allocs == s0.large_allocs);
	uint64_t fb = s1.rcu_fallback - s0.rcu_fallback;
	if (!tiny)
		CHECKF(fb == 0, "rcu_fallback +%llu: large objects were linked although memory for "
		       "pointer arrays was available", (unsigned long long)fb);
	else
		CHECKF(fb == 4, "tiny: rcu_fallback +%llu for 4 rcu_free()s from an unregistered "
		       "thread, expected 4", (unsigned long long)fb);

	/* A cache without sheaves. */
	struct sheaf_cache *ns = sheaf_cache_create("rcu_api_nosheaf", sizeof(struct cobj), 0,
						    SHEAF_NO_SHEAVES, NULL);
	REQUIRE(ns);
	for (int i = 0; i < 5; i++) {
		struct cobj *o = cobj_new(ns);
		rcu_free(o, rh);
	}
	if (!tiny)
		CHECKF(cache_event("rcu_api_nosheaf", SHEAF_STAT_free_rcu_sheaf_fail) == 5 &&
		       cache_event("rcu_api_nosheaf", SHEAF_STAT_free_rcu_sheaf) == 0,
		       "cache without sheaves: free_rcu_sheaf_fail %llu (expected 5), free_rcu_sheaf %llu",
		       (unsigned long long)cache_event("rcu_api_nosheaf", SHEAF_STAT_free_rcu_sheaf_fail),
		       (unsigned long long)cache_event("rcu_api_nosheaf", SHEAF_STAT_free_rcu_sheaf));
	CHECK(rcu_free_barrier() == 0);
	CHECKF(active(ns) == 0, "cache without sheaves: %zu objects still active", active(ns));
	CHECK(sheaf_cache_destroy(ns) == 0);
}

/* live = allocs - frees comes back after a phase of rcu_free()s. */
static void semantics_memory(void)
{
	static const size_t sizes[] = { 24, 48, 64, 100, 200, 512, 1000, 3000, 4096, 9000 };
	struct sheaf_cache *g = sheaf_cache_create("rcu_api_g", sizeof(struct cobj), 0, 0, NULL);
	REQUIRE(g);
	CHECK(rcu_free_barrier() == 0);
	uint64_t l0 = stable_live();
	struct sheaf_stats s0 = stats();

	for (int i = 0; i < 300; i++) {
		struct vobj *v = malloc(sizes[i % 10]);
		REQUIRE(v);
		v->canary = (uint64_t)i;
		rcu_free(v, rp);
	}
	static const size_t large_sizes[] = { 40000, 100000, 1u << 20 };
	for (int i = 0; i < 3; i++) {
		struct vobj *v = malloc(large_sizes[i]);
		REQUIRE(v);
		rcu_free(v, rp);
	}
	for (int i = 0; i < 20; i++) {
		struct cobj *o = cobj_new(g);
		rcu_free(o, rh);
	}
	for (int i = 0; i < 5; i++)
		rcu_free_mightsleep(malloc(sizes[i]));

	int r = rcu_free_barrier();
	struct sheaf_stats s1 = stats();
	CHECKF(r == 0, "rcu_free_barrier() returned %d", r);
	uint64_t l1 = settled_live(l0);
	CHECKF(l1 == l0, "live blocks (allocs - frees) %llu after the phase + barrier, %llu before",
	       (unsigned long long)l1, (unsigned long long)l0);
	CHECKF(s1.large_allocs == s0.large_allocs && s1.large_bytes == s0.large_bytes,
	       "large: %zu blocks / %zu bytes live, %zu / %zu before", s1.large_allocs,
	       s1.large_bytes, s0.large_allocs, s0.large_bytes);
	CHECKF(active(g) == 0, "cache g: %zu objects active", active(g));
	CHECK(s1.rcu_pending == 0);
	CHECK(sheaf_cache_destroy(g) == 0);
}

static int case_semantics(void)
{
	printf("semantics (%s build)\n", tiny ? "tiny" : "normal");
	fflush(stdout);   /* stdio's buffer exists from here on */
	/* Nothing deferred yet: this barrier starts no drain thread (see
	 * idle_barrier); the first rcu_free() below does, in semantics_steal,
	 * which takes no live-block baseline across it. */
	CHECK(rcu_free_barrier() == 0);
	semantics_null();
	semantics_steal();
	semantics_cache_barrier();
	semantics_destroy();
	semantics_thread_exit();
	semantics_registered();
	semantics_mightsleep();
	semantics_counters();
	semantics_memory();
	return check_done("rcu_api semantics");
}

/* ==================================================== case: timer ==== */
/* Waits (bounded) until rcu_objects_freed reached `want`. */
static bool wait_freed(uint64_t want, int max_ms, int *waited)
{
	for (*waited = 0; *waited < max_ms; *waited += 20) {
		if (stats().rcu_objects_freed >= want)
			return true;
		sleep_ms(20);
	}
	return stats().rcu_objects_freed >= want;
}

static int case_timer(void)
{
	int waited;
	/* 1. The very first deferred frees of the process, in another
	 * thread's partial sheaf (that thread stays alive). */
	struct work w = { .small = 3 };
	struct parked k;
	uint64_t f0 = stats().rcu_objects_freed;
	park_start(&k, do_work, &w);
	bool ok = wait_freed(f0 + 3, 3000, &waited);
	CHECKF(ok, "3 rcu_free()'d objects in a live thread's partly filled sheaf were not freed "
	       "within 3 s without a barrier (rcu_delay_ms is 30 ms): freed +%llu",
	       (unsigned long long)(stats().rcu_objects_freed - f0));
	if (ok)
		printf("  first rcu_free()s of the process: freed after ~%d ms\n", waited);
	park_release(&k);
	CHECK(rcu_free_barrier() == 0);

	/* 2. The drain thread exists and has gone idle. */
	sleep_ms(300);
	f0 = stats().rcu_objects_freed;
	for (int i = 0; i < 3; i++) {
		struct obj *o = obj_new();
		rcu_free(o, rp);
	}
	ok = wait_freed(f0 + 3, 3000, &waited);
	CHECKF(ok, "3 rcu_free()'d objects were not freed within 3 s without a barrier once the "
	       "drain thread had gone idle: freed +%llu",
	       (unsigned long long)(stats().rcu_objects_freed - f0));
	if (ok)
		printf("  rcu_free()s after the drain thread went idle: freed after ~%d ms\n", waited);
	CHECK(rcu_free_barrier() == 0);
	return check_done("rcu_api timer");
}

/* ============================================= case: idle_barrier ==== */
/* This process's threads, and whether one of them is sheaf's drain thread
 * (named "sheaf-rcu" by lib/rcu.c). */
static int task_count(bool *drain_thread)
{
	DIR *d = opendir("/proc/self/task");
	REQUIRE(d);
	int n = 0;
	struct dirent *de;
	*drain_thread = false;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		n++;
		char path[sizeof(de->d_name) + 32], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		FILE *f = fopen(path, "r");
		if (f) {
			if (fgets(comm, sizeof(comm), f) && strncmp(comm, "sheaf-rcu", 9) == 0)
				*drain_thread = true;
			fclose(f);
		}
	}
	closedir(d);
	return n;
}

static struct obj *nolock_victim;

static void nolock_handler(int sig)
{
	(void)sig;
	rcu_free_nolock(nolock_victim, rp);
}

static int case_idle_barrier(void)
{
	bool drain;
	int n0 = task_count(&drain);
	CHECKF(!drain, "a sheaf-rcu thread runs before anything was deferred");

	/* 1. Nothing ever deferred: the barriers have nothing to wait for. */
	struct sheaf_cache *c = sheaf_cache_create("rcu_api_idle", sizeof(struct cobj), 0, 0, NULL);
	REQUIRE(c);
	sheaf_cache_free(c, cobj_new(c));
	free(obj_new());
	CHECK(rcu_free_barrier() == 0);
	CHECK(sheaf_cache_rcu_barrier(c) == 0);
	CHECK(sheaf_cache_destroy(c) == 0);   /* calls sheaf_cache_rcu_barrier() */
	CHECK(rcu_free_barrier() == 0);
	int n1 = task_count(&drain);
	CHECKF(n1 == n0 && !drain,
	       "barriers with nothing ever deferred started a thread: %d threads before, %d after%s",
	       n0, n1, drain ? " (one is sheaf-rcu)" : "");
	struct sheaf_stats s0 = stats();
	CHECKF(s0.rcu_grace_periods == 0 && s0.rcu_objects_freed == 0 && s0.rcu_pending == 0,
	       "barriers with nothing deferred: grace periods %llu, freed %llu, pending %llu",
	       (unsigned long long)s0.rcu_grace_periods, (unsigned long long)s0.rcu_objects_freed,
	       (unsigned long long)s0.rcu_pending);

	/* 2. The first deferred free of the process comes from a signal
	 * handler, which cannot start the drain thread: the barrier must
	 * still wait for it. */
	nolock_victim = obj_new();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = nolock_handler;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
	REQUIRE(raise(SIGUSR1) == 0);
	int r = rcu_free_barrier();
	struct sheaf_stats s1 = stats();
	CHECKF(r == 0, "rcu_free_barrier() returned %d", r);
	CHECKF(s1.rcu_objects_freed == 1 && s1.rcu_pending == 0,
	       "an rcu_free_nolock() from a handler, queued before any drain thread existed: "
	       "the barrier left rcu_objects_freed %llu (expected 1), rcu_pending %llu",
	       (unsigned long long)s1.rcu_objects_freed, (unsigned long long)s1.rcu_pending);
	return check_done("rcu_api idle_barrier");
}

/* =========================================== case: online_barrier ==== */
static int case_online_barrier(void)
{
	rcu_register_thread();   /* online, outside any rcu_read_lock() */
	/* Work that needs a grace period: an object in this thread's rcu
	 * sheaf, and one rcu_free()'d by an unregistered thread. */
	struct work w = { .small = 1 };
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, do_work_thread, &w) == 0);
	REQUIRE(pthread_join(t, NULL) == 0);
	struct obj *o = obj_new();
	rcu_free(o, rp);
	uint64_t f0 = stats().rcu_objects_freed;
	say(BEFORE_BARRIER " from a registered, online thread\n");
	int r = rcu_free_barrier();
	say(AFTER_BARRIER "\n");
	CHECKF(r == 0, "rcu_free_barrier() returned %d", r);
	CHECK(stats().rcu_objects_freed > f0 || tiny);
	rcu_unregister_thread();
	CHECK(rcu_free_barrier() == 0);
	return check_done("rcu_api online_barrier");
}

/* ================================================ bad input cases ==== */
static struct obj global_obj;

static int case_bad_stack(void)
{
	struct obj local;
	memset(&local, 0, sizeof(local));
	struct obj *p = hide(&local);
	announce(p);
	rcu_free(p, rp);
	say(SURVIVED "\n");
	return 0;
}

static int case_bad_global(void)
{
	struct obj *p = hide(&global_obj);
	announce(p);
	rcu_free(p, rp);
	say(SURVIVED "\n");
	return 0;
}

static int case_bad_interior(void)
{
	char *p = malloc(OBJ_BYTES);
	REQUIRE(p);
	memset(p, 0, OBJ_BYTES);
	announce(p + 16);
	sheaf_rcu_free_field(hide(p + 16), p + 24, "rcu_free()");
	say(SURVIVED "\n");
	return 0;
}

static int case_bad_interior_large(void)
{
	char *p = malloc(100000);
	REQUIRE(p);
	memset(p, 0, 100000);
	announce(p + 4096);
	sheaf_rcu_free_field(hide(p + 4096), p + 4200, "rcu_free()");
	say(SURVIVED "\n");
	return 0;
}

static int case_bad_freed(void)
{
	struct obj *p = obj_new();
	struct obj *q = hide(p);   /* the compiler must not see the use after free */
	free(p);
	announce(q);
	rcu_free(q, rp);
	say(SURVIVED "\n");
	return 0;
}

static int case_bad_freed_large(void)
{
	struct lobj *p = lobj_new();
	struct lobj *q = hide(p);
	free(p);
	announce(q);
	rcu_free(q, rp);
	say(SURVIVED "\n");
	return 0;
}

/* abort_on_error=0: the same object twice, found when the batch runs. */
static int case_double_rcu(void)
{
	struct obj *p = obj_new();
	announce(p);
	struct sheaf_stats s0 = stats();
	rcu_free(p, rp);
	p = hide(p);
	rcu_free(p, rp);
	say(SURVIVED "\n");
	say(BEFORE_BARRIER "\n");
	int r = rcu_free_barrier();
	say(AFTER_BARRIER "\n");
	CHECKF(r == 0, "rcu_free_barrier() returned %d", r);
	struct sheaf_stats s1 = stats();
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == 1 && s1.rcu_pending == 0,
	       "an object rcu_free()'d twice: rcu_objects_freed +%llu (expected 1: it was freed "
	       "once), rcu_pending %llu", (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed),
	       (unsigned long long)s1.rcu_pending);

	/* Pointer arrays (large objects, caches without sheaves); one at a
	 * time, since a tiny build links them and a list with an object
	 * twice loops (diagnosed, the rest leaked). */
	struct lobj *lp = lobj_new();
	s0 = stats();
	rcu_free(lp, rp);
	lp = hide(lp);
	rcu_free(lp, rp);
	CHECK(rcu_free_barrier() == 0);
	s1 = stats();
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == 1 && s1.rcu_pending == 0,
	       "a large object rcu_free()'d twice: rcu_objects_freed +%llu (expected 1), "
	       "rcu_pending %llu", (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed),
	       (unsigned long long)s1.rcu_pending);
	struct sheaf_cache *ns = sheaf_cache_create("rcu_api_double", sizeof(struct cobj), 0,
						    SHEAF_NO_SHEAVES, NULL);
	REQUIRE(ns);
	struct cobj *co = cobj_new(ns);
	s0 = stats();
	rcu_free(co, rh);
	co = hide(co);
	rcu_free(co, rh);
	CHECK(rcu_free_barrier() == 0);
	s1 = stats();
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == 1 && s1.rcu_pending == 0,
	       "an object of a cache without sheaves rcu_free()'d twice: rcu_objects_freed +%llu "
	       "(expected 1), rcu_pending %llu",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed),
	       (unsigned long long)s1.rcu_pending);
	CHECK(sheaf_cache_destroy(ns) == 0);
	/* The allocator keeps working. */
	for (int i = 0; i < 1000; i++) {
		struct obj *o = obj_new();
		if (i % 2)
			free(o);
		else
			rcu_free(o, rp);
	}
	CHECK(rcu_free_barrier() == 0);
	return check_done("rcu_api double_rcu");
}

/*
 * abort_on_error=0: a full rcu sheaf goes to the barn as it is after its
 * grace period - the drain thread writes none of its objects (their first
 * words, where a user cache's free marker lives, keep what the program
 * wrote) - and the thread that takes it writes the markers of all its
 * objects then.  An object free()d again while its sheaf waits in the barn
 * is found at that point: diagnosed, dropped, and handed out only once.
 */
#define SETTLE_PATTERN 0x5e771e5e771e0000ull
struct settle_free {
	struct sheaf_cache *c;
	void *obj;
	pthread_barrier_t freed, done;
};

/* Frees the object and keeps it in its sheaf until main is done. */
static void *settle_free_thread(void *arg)
{
	struct settle_free *sf = arg;
	sheaf_cache_free(sf->c, sf->obj);
	pthread_barrier_wait(&sf->freed);
	pthread_barrier_wait(&sf->done);
	return NULL;
}

static int case_settle(void)
{
	if (tiny) {
		say("settle: a tiny build has no rcu sheaves\n");
		return 0;
	}
	struct sheaf_cache *c = sheaf_cache_create("rcu_api_settle", sizeof(struct cobj), 0, 0, NULL);
	REQUIRE(c);
	struct sheaf_cache_stats st;
	sheaf_cache_stats_get(c, &st);
	size_t cap = st.sheaf_capacity, n = 3 * cap;
	struct cobj **o = calloc(n, sizeof(*o)), **again = calloc(n, sizeof(*again));
	struct cobj **pre = calloc(cap + 1, sizeof(*pre));
	REQUIRE(o && again && pre && cap);
	/* From a fresh cache: three sheaves' worth. */
	for (size_t i = 0; i < n; i++) {
		o[i] = cobj_new(c);
		o[i]->canary = SETTLE_PATTERN ^ i;
	}
	struct sheaf_stats s0 = stats();
	for (size_t i = 0; i < n; i++)
		rcu_free(o[i], rh);
	CHECK(rcu_free_barrier() == 0);
	size_t intact = 0;
	for (size_t i = 0; i < n; i++)
		intact += o[i]->canary == (SETTLE_PATTERN ^ i);
	CHECKF(intact == n, "the drain thread wrote %zu of %zu objects", n - intact, n);
	sheaf_cache_stats_get(c, &st);
	CHECKF(st.barn_full == 3, "%zu full sheaves in the barn, want 3", st.barn_full);

	/* Taking a sheaf writes the markers of its objects.  What the main
	 * sheaf still holds (a refill may fill part of one) goes first. */
	size_t npre = 0;
	uint64_t got0 = st.events[SHEAF_STAT_barn_get];
	do {
		REQUIRE(npre <= cap);
		pre[npre] = sheaf_cache_alloc(c);
		REQUIRE(pre[npre]);
		npre++;
		sheaf_cache_stats_get(c, &st);
	} while (st.events[SHEAF_STAT_barn_get] == got0);
	intact = 0;
	size_t q = n;
	for (size_t i = 0; i < n; i++)
		if (o[i]->canary == (SETTLE_PATTERN ^ i)) {
			intact++;
			q = i;
		}
	CHECKF(intact == 2 * cap, "%zu objects not settled after one sheaf was taken, want %zu", intact,
	       2 * cap);
	REQUIRE(q < n);

	/* A double free of an object whose sheaf waits in the barn, by
	 * another thread, whose sheaf keeps it until main has taken every
	 * sheaf: the double free is caught if the object is still free when
	 * its sheaf is taken (freed here, the next allocation would hand it
	 * out again at once, and then nothing can tell; README, Hardening). */
	announce(o[q]);
	static struct settle_free sf;
	sf.c = c;
	sf.obj = hide(o[q]);
	pthread_barrier_init(&sf.freed, NULL, 2);
	pthread_barrier_init(&sf.done, NULL, 2);
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, settle_free_thread, &sf) == 0);
	pthread_barrier_wait(&sf.freed);
	for (size_t i = 0; i < n; i++) {
		again[i] = sheaf_cache_alloc(c);
		REQUIRE(again[i]);
	}
	size_t seen = 0;
	for (size_t i = 0; i < npre; i++)
		seen += pre[i] == o[q];
	for (size_t i = 0; i < n; i++)
		seen += again[i] == o[q];
	CHECKF(seen == 0, "the object freed twice (and kept by the other thread) was handed out %zu "
	       "times", seen);
	pthread_barrier_wait(&sf.done);
	pthread_join(t, NULL);
	pthread_barrier_destroy(&sf.freed);
	pthread_barrier_destroy(&sf.done);
	sheaf_cache_stats_get(c, &st);
	CHECKF(st.events[SHEAF_STAT_free_invalid] == 1, "free_invalid %llu",
	       (unsigned long long)st.events[SHEAF_STAT_free_invalid]);
	struct sheaf_stats s1 = stats();
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == n - 1,
	       "rcu_objects_freed +%llu, want %zu (one object was found freed twice)",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed), n - 1);
	for (size_t i = 0; i < npre; i++)
		sheaf_cache_free(c, pre[i]);
	for (size_t i = 0; i < n; i++)
		sheaf_cache_free(c, again[i]);
	sheaf_cache_stats_get(c, &st);
	CHECKF(st.objects_active == 0, "objects_active %zu after freeing everything", st.objects_active);
	CHECK(sheaf_cache_destroy(c) == 0);
	free(o);
	free(again);
	free(pre);
	return check_done("rcu_api settle");
}

/* =================================================== parent side ==== */
struct outcome {
	int status;
	char out[16384];
};

static void run_child(const char *self, const char *name, const char *options, unsigned int limit,
		      struct outcome *o)
{
	int fd[2];
	REQUIRE(pipe(fd) == 0);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core);
		dup2(fd[1], 1);
		dup2(fd[1], 2);
		close(fd[0]);
		close(fd[1]);
		/* Later settings win: keep what the caller set, add ours. */
		const char *old = getenv("SHEAF_OPTIONS");
		char buf[1024];
		if (old && *old && options && *options)
			snprintf(buf, sizeof(buf), "%s:%s", old, options);
		else
			snprintf(buf, sizeof(buf), "%s", options && *options ? options : old ? old : "");
		setenv("SHEAF_OPTIONS", buf, 1);
		alarm(limit);   /* a hang becomes a SIGALRM the parent reports */
		execl("/proc/self/exe", self, "--case", name, (char *)NULL);
		execl(self, self, "--case", name, (char *)NULL);
		_exit(127);
	}
	close(fd[1]);
	size_t len = 0;
	char sink[4096];
	for (;;) {
		char *dst = len < sizeof(o->out) - 1 ? o->out + len : sink;
		size_t room = len < sizeof(o->out) - 1 ? sizeof(o->out) - 1 - len : sizeof(sink);
		ssize_t r = read(fd[0], dst, room);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (dst != sink)
			len += (size_t)r;
	}
	o->out[len] = '\0';
	close(fd[0]);
	while (waitpid(pid, &o->status, 0) < 0)
		REQUIRE(errno == EINTR);
}

static void describe(int status, char *buf, size_t n)
{
	if (WIFEXITED(status))
		snprintf(buf, n, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, n, "signal %d%s", WTERMSIG(status),
			 WTERMSIG(status) == SIGALRM ? " (SIGALRM: hung)" :
			 WTERMSIG(status) == SIGABRT ? " (SIGABRT)" : "");
	else
		snprintf(buf, n, "status 0x%x", status);
}

static void dump(const char *name, const struct outcome *o)
{
	fprintf(stderr, "---- %s: child output ----\n%s---- end ----\n", name, o->out);
}

/* The line of `text` that contains `needle`, or NULL; copied to `line`. */
static const char *find_line(const char *text, const char *needle, char *line, size_t cap)
{
	const char *hit = strstr(text, needle);
	if (!hit)
		return NULL;
	const char *start = hit;
	while (start > text && start[-1] != '\n')
		start--;
	const char *end = strchr(hit, '\n');
	size_t n = end ? (size_t)(end - start) : strlen(start);
	if (n >= cap)
		n = cap - 1;
	memcpy(line, start, n);
	line[n] = '\0';
	return start;
}

/* The address the child announced ("0x..."), or false. */
static bool announced(const char *out, char *addr, size_t cap)
{
	const char *a = strstr(out, ANNOUNCE);
	if (!a)
		return false;
	a += strlen(ANNOUNCE);
	size_t n = strcspn(a, "\n");
	if (n >= cap)
		n = cap - 1;
	memcpy(addr, a, n);
	addr[n] = '\0';
	return true;
}

/* A case whose child must exit 0. */
static void expect_pass(const char *self, const char *name, const char *options, unsigned int limit)
{
	static struct outcome o;
	char how[64];
	run_child(self, name, options, limit, &o);
	describe(o.status, how, sizeof(how));
	bool ok = WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0;
	CHECKF(ok, "case %s (SHEAF_OPTIONS=%s): %s", name, options, how);
	if (!ok)
		dump(name, &o);
	else
		printf("%s", o.out);
}

/* A bad call: SIGABRT, and a line containing `prefix` and one of
 * `kinds`, naming the announced address. */
static void expect_abort(const char *self, const char *name, const char *kind1, const char *kind2)
{
	static struct outcome o;
	char how[64], addr[64], line[1024];
	run_child(self, name, "abort_on_error=1", CHILD_ALARM, &o);
	describe(o.status, how, sizeof(how));
	bool ok = true;
	bool aborted = WIFSIGNALED(o.status) && WTERMSIG(o.status) == SIGABRT;
	CHECKF(aborted, "case %s: %s, expected SIGABRT", name, how);
	ok &= aborted;
	bool have_addr = announced(o.out, addr, sizeof(addr));
	CHECKF(have_addr, "case %s: the child did not reach the bad call", name);
	ok &= have_addr;
	const char *at = find_line(o.out, kind1, line, sizeof(line));
	if (!at && kind2)
		at = find_line(o.out, kind2, line, sizeof(line));
	CHECKF(at, "case %s: no diagnostic line containing \"%s\"%s%s%s", name, kind1,
	       kind2 ? " or \"" : "", kind2 ? kind2 : "", kind2 ? "\"" : "");
	ok &= at != NULL;
	if (at) {
		bool prefixed = strstr(line, "sheaf: rcu_free(): ") != NULL;
		CHECKF(prefixed, "case %s: the line does not start with \"sheaf: rcu_free(): \": %s",
		       name, line);
		bool named = have_addr && strstr(line, addr) != NULL;
		CHECKF(named, "case %s: the line does not name %s: %s", name, addr, line);
		ok &= prefixed && named;
	}
	CHECKF(!strstr(o.out, SURVIVED), "case %s: the process went on after the bad call", name);
	if (!ok)
		dump(name, &o);
	else
		printf("%s: SIGABRT after \"%s\"\n", name, line);
}

/* A case that reports its bad call and goes on (abort_on_error=0, no
 * timer collection): whether it exited 0. */
static bool run_continuing(const char *self, const char *name, struct outcome *o)
{
	char how[64];
	run_child(self, name, "abort_on_error=0:rcu_delay_ms=600000", CHILD_ALARM, o);
	describe(o->status, how, sizeof(how));
	bool ok = WIFEXITED(o->status) && WEXITSTATUS(o->status) == 0;
	CHECKF(ok, "case %s (abort_on_error=0): %s, expected exit 0", name, how);
	return ok;
}

static void expect_double_rcu(const char *self)
{
	static struct outcome o;
	char addr[64], line[1024];
	const char *name = "double_rcu";
	bool ok = run_continuing(self, name, &o);
	bool have_addr = announced(o.out, addr, sizeof(addr));
	const char *before = strstr(o.out, BEFORE_BARRIER);
	const char *after = strstr(o.out, AFTER_BARRIER);
	const char *diag = find_line(o.out, "double free", line, sizeof(line));
	CHECKF(diag, "case %s: no \"double free\" line for an object rcu_free()'d twice", name);
	if (diag) {
		CHECKF(before && diag > before && (!after || diag < after),
		       "case %s: the \"double free\" line is not printed during rcu_free_barrier()",
		       name);
		CHECKF(have_addr && strstr(line, addr), "case %s: the line does not name %s: %s",
		       name, have_addr ? addr : "?", line);
		CHECKF(strstr(line, "sheaf: rcu_free(): ") != NULL,
		       "case %s: the line does not start with \"sheaf: rcu_free(): \": %s", name, line);
	}
	if (!ok || !diag)
		dump(name, &o);
	else
		printf("%s: diagnosed during the barrier: \"%s\"; exit 0\n", name, line);
}

static void expect_settle(const char *self)
{
	static struct outcome o;
	char addr[64], line[1024];
	const char *name = "settle";
	bool ok = run_continuing(self, name, &o);
	if (tiny) {
		if (!ok)
			dump(name, &o);
		return;
	}
	bool have_addr = announced(o.out, addr, sizeof(addr));
	const char *diag = find_line(o.out, "sheaf: rcu_free(): double free of", line, sizeof(line));
	CHECKF(diag && have_addr && strstr(line, addr),
	       "case %s: no \"rcu_free(): double free\" line naming the object freed twice", name);
	if (!ok || !diag)
		dump(name, &o);
	else
		printf("%s: found when its sheaf left the barn: \"%s\"; exit 0\n", name, line);
}

struct child_case {
	const char *name;
	int (*run)(void);
};

static const struct child_case cases[] = {
	{ "semantics", case_semantics },
	{ "timer", case_timer },
	{ "idle_barrier", case_idle_barrier },
	{ "online_barrier", case_online_barrier },
	{ "bad_stack", case_bad_stack },
	{ "bad_global", case_bad_global },
	{ "bad_interior", case_bad_interior },
	{ "bad_interior_large", case_bad_interior_large },
	{ "bad_freed", case_bad_freed },
	{ "bad_freed_large", case_bad_freed_large },
	{ "double_rcu", case_double_rcu },
	{ "settle", case_settle },
};

int main(int argc, char **argv)
{
	tiny = sheaf_build_flags() & SHEAF_BUILD_TINY;
	if (argc == 3 && strcmp(argv[1], "--case") == 0) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			if (strcmp(argv[2], cases[i].name) == 0)
				return cases[i].run();
		fprintf(stderr, "unknown case %s\n", argv[2]);
		return 2;
	}
	alarm(300);
	printf("test_rcu_api (%s build)\n", tiny ? "tiny" : "normal");
	expect_pass(argv[0], "semantics", "rcu_delay_ms=600000", CHILD_ALARM);
	expect_pass(argv[0], "timer", "rcu_delay_ms=30", CHILD_ALARM);
	expect_pass(argv[0], "idle_barrier", "", CHILD_ALARM);
	/* Returns in milliseconds when it works: a short limit. */
	expect_pass(argv[0], "online_barrier", "", 6);
	expect_abort(argv[0], "bad_stack", "invalid pointer", NULL);
	expect_abort(argv[0], "bad_global", "invalid pointer", NULL);
	expect_abort(argv[0], "bad_interior", "interior pointer", NULL);
	expect_abort(argv[0], "bad_interior_large", "interior pointer", NULL);
	expect_abort(argv[0], "bad_freed", "double free", NULL);
	expect_abort(argv[0], "bad_freed_large", "double free", "already freed");
	expect_double_rcu(argv[0]);
	expect_settle(argv[0]);
	return check_done("test_rcu_api");
}
