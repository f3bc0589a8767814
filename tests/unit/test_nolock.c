/*
 * test_nolock.c - the signal-safe entry points, fired deterministically
 * inside each allocator path.
 *
 * sheaf_test_hook is called at fixed points inside the slow paths: with the
 * thread's sheaves being changed (alloc/free slow path), with a barn lock,
 * a cache's slab lock or the large-allocation lock held, and with the
 * thread's rcu_free slot claimed.  The hook raises SIGUSR1 there, and the
 * handler calls sheaf_malloc_nolock(), sheaf_free_nolock() and
 * rcu_free_nolock().  Had any of them waited for a lock the interrupted
 * code holds, or touched a sheaf it is changing, the test would hang
 * (alarm) or lose or duplicate objects (exact accounting at the end).
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "internal.h"
#include "sheaf/rcu.h"

struct obj {
	struct rcu_ptr rp;
	char data[56];
};

static volatile sig_atomic_t target = -1, fired[8];
static int nolock_null_while_busy, handler_runs, handler_allocs;
static struct obj *held[16];

static void handler(int sig)
{
	(void)sig;
	handler_runs++;
	struct thread_cache *tc = sheaf_tc;
	bool busy = tc && tc->nolock_refill;
	struct obj *o = sheaf_malloc_nolock(sizeof(struct obj));
	if (!o && busy)
		nolock_null_while_busy++;
	if (o)
		handler_allocs++;
	CHECK(!busy || o == NULL);   /* never touches a stash being refilled */
	for (int i = 0; i < 16; i++) {
		if (!held[i]) {
			held[i] = o;
			break;
		}
		if (i == 15 && o)
			sheaf_free_nolock(o);
	}
	/* Free two of the held ones: one plainly, one after a grace period. */
	for (int i = 0, n = 0; i < 16 && n < 2; i++) {
		if (held[i] && held[i] != o) {
			if (n++ == 0)
				sheaf_free_nolock(held[i]);
			else
				rcu_free_nolock(held[i], rp);
			held[i] = NULL;
		}
	}
}

static void hook(int point)
{
	if (point == target) {
		fired[point]++;
		target = -1;   /* once per arming */
		raise(SIGUSR1);
	}
}

/*
 * rcu_free_nolock() cannot allocate a sheaf: a call that leaves its slot
 * empty (hand-off of a full sheaf, or nothing to be had) asks for one in
 * tc->rcu_want, and the thread's next slow path puts an empty sheaf there,
 * so that the calls after it need not link objects.  The first object in
 * such a sheaf (pushed by the slow path: the inline fast path leaves empty
 * sheaves alone) marks the thread dirty, so that the drain thread comes for
 * the partial sheaf; rcu_free() is checked the same way.
 */
static void test_rcu_provision(void)
{
	struct thread_cache *tc = sheaf_tc;
	unsigned int cls = size_to_class(sizeof(struct obj));
	struct sheaf_cache *c = &kmalloc_caches[cls];
	struct sheaf **slot = &tc->pcs[cls].rcu_free;
	unsigned int delay = sheaf_opt.rcu_delay_ms;
	__atomic_store_n(&sheaf_opt.rcu_delay_ms, 600000u, __ATOMIC_RELAXED);   /* no steal meanwhile */
	REQUIRE(rcu_free_barrier() == 0);
	int n = 0;
	while (!(__atomic_load_n(&tc->rcu_want, __ATOMIC_RELAXED) & (1ull << cls)) && n < 100000) {
		struct obj *o = sheaf_malloc(sizeof(*o));
		REQUIRE(o);
		rcu_free_nolock(o, rp);
		n++;
	}
	CHECKF(n < 100000, "rcu_free_nolock() never asked for an rcu sheaf (%d calls)", n);
	CHECK(__atomic_load_n(slot, __ATOMIC_ACQUIRE) == NULL);
	REQUIRE(rcu_free_barrier() == 0);   /* the thread is clean again */
	CHECK(!__atomic_load_n(&tc->rcu_dirty, __ATOMIC_RELAXED));
	/* A slow path of this thread provisions the slot. */
	sheaf_free(cache_alloc_any(c));
	struct sheaf *s = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	CHECKF(s && s != RCU_CLAIMED && s->size == 0 && s->cache == c,
	       "the slow path left the rcu slot at %p, not an empty sheaf", (void *)s);
	CHECK(__atomic_load_n(&tc->rcu_want, __ATOMIC_RELAXED) == 0);
	struct sheaf_cache_stats st0, st1;
	sheaf_cache_stats_get(c, &st0);
	struct obj *o = sheaf_malloc(sizeof(*o));
	REQUIRE(o);
	rcu_free_nolock(o, rp);
	sheaf_cache_stats_get(c, &st1);
	CHECK(__atomic_load_n(slot, __ATOMIC_ACQUIRE) == s && s->size == 1);
	CHECK(st1.events[SHEAF_STAT_free_rcu_sheaf_fail] == st0.events[SHEAF_STAT_free_rcu_sheaf_fail]);
	CHECKF(__atomic_load_n(&tc->rcu_dirty, __ATOMIC_RELAXED),
	       "rcu_free_nolock()'s first object in a provisioned sheaf did not mark the thread dirty");
	REQUIRE(rcu_free_barrier() == 0);
	CHECK(__atomic_load_n(slot, __ATOMIC_ACQUIRE) == NULL);
	/* rcu_free() into an empty sheaf in the slot: slot_push() marks. */
	__atomic_fetch_or(&tc->rcu_want, 1ull << cls, __ATOMIC_RELAXED);
	sheaf_free(cache_alloc_any(c));
	REQUIRE(__atomic_load_n(slot, __ATOMIC_ACQUIRE) != NULL);
	CHECK(!__atomic_load_n(&tc->rcu_dirty, __ATOMIC_RELAXED));
	o = sheaf_malloc(sizeof(*o));
	REQUIRE(o);
	rcu_free(o, rp);
	CHECKF(__atomic_load_n(&tc->rcu_dirty, __ATOMIC_RELAXED),
	       "rcu_free()'s first object in a provisioned sheaf did not mark the thread dirty");
	REQUIRE(rcu_free_barrier() == 0);
	__atomic_store_n(&sheaf_opt.rcu_delay_ms, delay, __ATOMIC_RELAXED);
}

static int64_t live(void)
{
	struct sheaf_stats s;
	sheaf_stats_get(&s);
	return (int64_t)(s.allocs - s.frees);
}

int main(void)
{
	sheaf_init();
	alarm(60);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);

	rcu_free_barrier();
	int64_t base = live();
	sheaf_test_hook = hook;

	static const char *const names[] = { "alloc slow path", "free slow path", "barn locked",
					     "slabs locked", "rcu slot claimed", "large lock held" };
	void *v[2000];
	for (int point = HOOK_ALLOC_SLOW; point <= HOOK_LARGE_LOCKED; point++) {
		for (int round = 0; round < 20; round++) {
			target = point;
			/* Drive every path: a burst larger than the sheaves
			 * (slow paths, barn, slabs), rcu_free()s, and large
			 * blocks. */
			for (int i = 0; i < 2000; i++)
				v[i] = sheaf_malloc(64);
			for (int i = 0; i < 2000; i++) {
				if (i % 3 == 0)
					sheaf_rcu_free_field(v[i], v[i], "rcu_free()");
				else
					sheaf_free(v[i]);
			}
			/* Two, so that the second free pushes the first
			 * out of the thread's large slot into the cache. */
			void *big = sheaf_malloc(100000), *big2 = sheaf_malloc(300000);
			sheaf_free(big);
			sheaf_free(big2);
			if (round % 5 == 4)
				rcu_free_barrier();   /* partial rcu sheaves go, slabs get flushed */
			target = -1;
		}
		/* Tiny builds have no sheaves, barns or rcu sheaves. */
		bool tiny = sheaf_build_flags() & SHEAF_BUILD_TINY;
		bool exists = !tiny || point == HOOK_SLABS_LOCKED || point == HOOK_LARGE_LOCKED;
		CHECKF(!exists || fired[point] > 0, "hook point '%s' was never reached", names[point]);
		printf("test_nolock: %-18s fired %d times\n", names[point], (int)fired[point]);
	}
	sheaf_test_hook = NULL;
	for (int i = 0; i < 16; i++)
		sheaf_free(held[i]);
	if (!(sheaf_build_flags() & SHEAF_BUILD_TINY))
		test_rcu_provision();
	REQUIRE(rcu_free_barrier() == 0);
	sheaf_free(sheaf_malloc(8));   /* runs deferred nolock frees */
	int64_t end = live();
	CHECKF(end == base, "live objects %lld before, %lld after: lost or doubled frees",
	       (long long)base, (long long)end);
	printf("test_nolock: %d handler runs, %d sheaf_malloc_nolock() successes\n", handler_runs,
	       handler_allocs);
	/* The first call of each round finds the stash empty and asks the
	 * thread to refill it; later ones are served. */
	CHECK(handler_allocs > 0);
	/* A free deferred by sheaf_free_nolock() (no stash for this class
	 * yet in this thread) is marked free at once: a second free is
	 * diagnosed, and the block is not handed out twice. */
	sheaf_opt.abort_on_error = false;
	struct sheaf_cache_stats st0, st1;
	struct sheaf_cache *c64 = &kmalloc_caches[size_to_class(200)];
	sheaf_cache_stats_get(c64, &st0);
	char *p = sheaf_malloc(200);
	sheaf_free_nolock(p);
	sheaf_free(p);   /* double free: expect a diagnostic */
	sheaf_cache_stats_get(c64, &st1);
	CHECKF(st1.events[SHEAF_STAT_free_invalid] == st0.events[SHEAF_STAT_free_invalid] + 1,
	       "a double free after sheaf_free_nolock() was not diagnosed");
	char *q1 = sheaf_malloc(200), *q2 = sheaf_malloc(200);
	CHECK(q1 != q2);
	sheaf_free(q1);
	sheaf_free(q2);
	/* Deferred frees are linked through encoded pointers: a write into a
	 * block on the list (a use after free) makes its link decode to
	 * garbage, which is diagnosed and not followed; the block behind it
	 * is leaked, never freed twice or handed out. */
	char *a = sheaf_malloc(300), *b = sheaf_malloc(300);
	REQUIRE(a && b);
	sheaf_free_nolock(a);
	sheaf_free_nolock(b);                /* list: b -> a */
	memset(b, 'A', 2 * sizeof(void *));  /* b's link word overwritten */
	sheaf_free(sheaf_malloc(8));         /* processes the list */
	bool handed_out = false;
	char *many[512];
	for (int i = 0; i < 512; i++) {
		many[i] = sheaf_malloc(300);
		handed_out |= many[i] == a;
	}
	CHECKF(!handed_out, "a block behind a corrupted link was freed");
	for (int i = 0; i < 512; i++)
		sheaf_free(many[i]);
	sheaf_opt.abort_on_error = true;
	return check_done("test_nolock");
}
