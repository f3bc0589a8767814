/*
 * thread.c - per-thread state, initialisation, thread exit and fork.
 *
 * Initialisation must not recurse: it runs inside the first malloc of the
 * process (possibly before our constructor, possibly from the dynamic
 * loader), so it calls nothing that allocates: getenv, getauxval,
 * pthread_key_create.  pthread_atfork() does allocate in glibc; it runs
 * last, after sheaf_ready is set, so its malloc is served normally.
 *
 * A thread's state is created on its first slow-path call.  The TLS
 * variable is one initial-exec pointer (see internal.h).  At thread exit a
 * pthread key destructor hands every sheaf back (barn or slabs) and points
 * the thread at tc_dead, whose empty pcs send any later malloc/free of that
 * thread (other key destructors, libc's own teardown) straight to the
 * slabs: nothing is cached on behalf of a thread that is going away.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/random.h>
#include <unistd.h>
#include <urcu/urcu-qsbr.h>
#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#endif

__thread struct thread_cache *sheaf_tc __attribute__((tls_model("initial-exec")));
static __thread int tc_creating __attribute__((tls_model("initial-exec")));
static __thread bool tc_background __attribute__((tls_model("initial-exec")));

void thread_set_background(void)
{
	tc_background = true;
}

int sheaf_ready;
int sheaf_on_valgrind;
int sheaf_under_valgrind;
uint64_t sheaf_free_key;

void vg_alloc(const void *p, size_t size, bool zeroed)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
	if (sheaf_on_valgrind)
		VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, zeroed);
#else
	(void)p, (void)size, (void)zeroed;
#endif
}

void vg_fresh(const void *p, size_t size)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
	if (sheaf_under_valgrind)
		VALGRIND_MAKE_MEM_DEFINED(p, size);
#else
	(void)p, (void)size;
#endif
}

void vg_free(const void *p)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
	if (sheaf_on_valgrind)
		VALGRIND_FREELIKE_BLOCK(p, 0);
#else
	(void)p;
#endif
}
static int init_state;  /* 0 none, 1 running, 2 done */
static pthread_key_t tc_key;

static sheaf_lock_t threads_lock = SHEAF_LOCK_INIT;
static struct thread_cache *threads_head;
static unsigned long nr_threads;
/* Live threads per cache node (struct cache_node), under threads_lock: a
 * new thread makes the least used node its home, so that as many threads
 * as there are nodes never share a slab (see internal.h). */
static unsigned int node_threads[SHEAF_MAX_NODES];

static struct thread_cache tc_dead = {
	.pcs = { [0 ... NR_CLASSES - 1] = { .main = &sheaf_empty } },
	.dead = 1,
};

static void thread_cache_exit(void *arg);
static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

/* The nodes option, or one node per CPU the process may run on (as the
 * kernel has a kmem_cache_node per NUMA node and a sheaf per CPU).  No
 * allocation: this runs inside the process's first malloc. */
static void nodes_init(void)
{
	unsigned int n = sheaf_opt.nodes;
	if (!n) {
		cpu_set_t set;
		CPU_ZERO(&set);
		n = sched_getaffinity(0, sizeof(set), &set) == 0 ? (unsigned int)CPU_COUNT(&set) : 1;
	}
	if (config_tiny || n < 1)
		n = 1;   /* no sheaves, no barn: one node is the smallest footprint */
	sheaf_nr_nodes = n < SHEAF_MAX_NODES ? n : SHEAF_MAX_NODES;
}

static uint64_t make_key(void)
{
	uint64_t k = 0;
	const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
	if (r)
		memcpy(&k, r + 8, sizeof(k));   /* glibc uses bytes 0..7 for the stack guard */
	if (getrandom(&k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k) && !r)
		k = (uint64_t)(uintptr_t)&k * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	/* The top byte, which the fast paths test alone (marker_maybe_free()),
	 * in 0xf8..0xfe: never there in pointers, small or negative integers,
	 * ASCII or UTF-8. */
	k = (k & 0x00ffffffffffffffull) | (uint64_t)(0xf8 + (k >> 56) % 7) << 56;
	return k | 1;   /* never 0: a zeroed word must not look free */
}

void sheaf_init(void)
{
	int expected = 0;
	if (__atomic_compare_exchange_n(&init_state, &expected, 1, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE)) {
		options_init();
		stats_init();
#ifdef HAVE_VALGRIND_MEMCHECK_H
		sheaf_under_valgrind = RUNNING_ON_VALGRIND ? 1 : 0;
		sheaf_on_valgrind = sheaf_under_valgrind && sheaf_opt.valgrind;
#endif
		prof_init();
		sheaf_free_key = make_key();
		zero_init();
		nodes_init();
		sizeclass_init();
		if (pthread_key_create(&tc_key, thread_cache_exit) != 0)
			diag_fatal("sheaf: pthread_key_create failed\n");
		__atomic_store_n(&sheaf_ready, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
		pthread_atfork(fork_prepare, fork_parent, fork_child);
		return;
	}
	/* Another thread is initialising: it allocates nothing, so this wait
	 * is short and cannot be on ourselves. */
	while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)
		sched_yield();
}

__attribute__((constructor)) static void sheaf_constructor(void)
{
	if (!sheaf_ready)
		sheaf_init();
}

struct thread_cache *thread_cache_get(void)
{
	struct thread_cache *tc = sheaf_tc;
	if (likely(tc))
		return tc->dead ? NULL : tc;
	if (unlikely(!__atomic_load_n(&sheaf_ready, __ATOMIC_ACQUIRE)))
		sheaf_init();
	/* No per-thread state while bootstrapping (pthread_setspecific()
	 * below may call calloc), under valgrind or when profiling: every
	 * call then reaches the slow paths, where their hooks are. */
	if (tc_creating || sheaf_on_valgrind || sheaf_prof_on)
		return NULL;
	tc_creating = 1;
	tc = meta_alloc(sizeof(*tc));
	if (!tc) {
		tc_creating = 0;
		return NULL;
	}
	for (int i = 0; i < NR_CLASSES; i++)
		tc->pcs[i].main = &sheaf_empty;
	if (pthread_setspecific(tc_key, tc) != 0) {
		meta_free(tc, sizeof(*tc));
		tc_creating = 0;
		return NULL;
	}
	lock_acquire(&threads_lock);
	tc->counted = !tc_background;
	for (unsigned int i = 1; i < sheaf_nr_nodes && tc->counted; i++)
		if (node_threads[i] < node_threads[tc->node])
			tc->node = i;
	node_threads[tc->node] += tc->counted;
	tc->next = threads_head;
	if (threads_head)
		threads_head->prev = tc;
	threads_head = tc;
	nr_threads++;
	lock_release(&threads_lock);
	sheaf_tc = tc;
	tc_creating = 0;
	return tc;
}

/* ----------------------------------------------------------- cache ids */
#define MAX_CACHE_IDS 65536

struct pcs *thread_ext_pcs(struct thread_cache *tc, struct sheaf_cache *c)
{
	if (likely(c->id < tc->nr_ext)) {
		struct pcs *pcs = &tc->ext[c->id];
		pcs->cache = c;   /* ids are reused after destroy */
		return pcs;
	}
	if (c->id >= MAX_CACHE_IDS)
		return NULL;
	unsigned int n = tc->nr_ext ? tc->nr_ext : 8;
	while (n <= c->id)
		n *= 2;
	struct pcs *ext = meta_alloc(n * sizeof(*ext));
	if (!ext)
		return NULL;
	for (unsigned int i = 0; i < n; i++)
		ext[i].main = &sheaf_empty;
	tc->busy++;                    /* signal handlers read ext too */
	barrier();
	lock_acquire(&threads_lock);   /* sheaf_cache_destroy() walks ext */
	struct pcs *old = tc->ext;
	unsigned int old_n = tc->nr_ext;
	if (old_n)
		memcpy(ext, old, old_n * sizeof(*ext));
	tc->ext = ext;
	tc->nr_ext = n;
	lock_release(&threads_lock);
	barrier();
	tc->busy--;
	meta_free(old, old_n * sizeof(*old));
	tc->ext[c->id].cache = c;
	return &tc->ext[c->id];
}

static uint64_t id_map[MAX_CACHE_IDS / 64];

unsigned int cache_id_alloc(void)
{
	unsigned int id = MAX_CACHE_IDS;   /* out of ids: such a cache runs without sheaves */
	lock_acquire(&caches_lock);
	for (unsigned int w = 0; w < MAX_CACHE_IDS / 64; w++) {
		if (~id_map[w]) {
			unsigned int b = (unsigned int)__builtin_ctzll(~id_map[w]);
			id_map[w] |= 1ull << b;
			id = w * 64 + b;
			break;
		}
	}
	lock_release(&caches_lock);
	return id;
}

void cache_id_free(unsigned int id)
{
	if (id >= MAX_CACHE_IDS)
		return;
	lock_acquire(&caches_lock);
	id_map[id / 64] &= ~(1ull << (id % 64));
	lock_release(&caches_lock);
}

/* --------------------------------------------------------- thread list */
void threads_foreach(void (*fn)(struct thread_cache *tc, void *arg), void *arg)
{
	lock_acquire(&threads_lock);
	for (struct thread_cache *tc = threads_head; tc; tc = tc->next)
		fn(tc, arg);
	lock_release(&threads_lock);
}

unsigned long threads_count(void)
{
	return __atomic_load_n(&nr_threads, __ATOMIC_RELAXED);
}

/* Hands everything `tc` holds back and frees it; threads_lock held. */
static void __thread_cache_release(struct thread_cache *tc)
{
	rcu_thread_exit(tc);   /* pending rcu_free()s go to the drain thread */
	nolock_release(tc);
	large_slot_release(tc);
	for (int i = 0; i < NR_CLASSES; i++)
		pcs_drain(&kmalloc_caches[i], &tc->pcs[i], &kmalloc_caches[i].node[tc->node]);
	/* An entry whose cache was destroyed was drained by the destroy
	 * (under threads_lock, like this), so `cache` is only followed while
	 * the entry still holds something. */
	for (unsigned int i = 0; i < tc->nr_ext; i++) {
		struct pcs *pcs = &tc->ext[i];
		if (pcs->main != &sheaf_empty || pcs->spare || pcs->alloc_fast || pcs->free_fast ||
		    pcs->rcu_sheaf)
			pcs_drain(pcs->cache, pcs, &pcs->cache->node[tc->node]);
	}
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		threads_head = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	nr_threads--;
	node_threads[tc->node] -= tc->counted;
	meta_free(tc->ext, tc->nr_ext * sizeof(*tc->ext));
	meta_free(tc, sizeof(*tc));
}

/*
 * A thread of the parent that the fork child did not inherit.  It may have
 * been anywhere in a slow path (between a barn exchange and the store to
 * pcs->main, say), so its sheaves cannot be trusted: they are leaked (a
 * bounded amount per thread), only its counters are kept.  Its rcu slots
 * are published with release stores and a claimed one is skipped, so its
 * pending rcu_free()s still go to the child's drain thread.
 */
static void orphan_release(struct thread_cache *tc)
{
	rcu_thread_exit(tc);
	large_slot_orphan(tc);
	for (int i = 0; i < NR_CLASSES; i++)
		pcs_fold_counters(&kmalloc_caches[i], &tc->pcs[i]);
	for (unsigned int i = 0; i < tc->nr_ext; i++)
		if (tc->ext[i].cache &&
		    (tc->ext[i].alloc_fast || tc->ext[i].free_fast || tc->ext[i].rcu_sheaf))
			pcs_fold_counters(tc->ext[i].cache, &tc->ext[i]);
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		threads_head = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	nr_threads--;
	node_threads[tc->node] -= tc->counted;
}

static void thread_cache_exit(void *arg)
{
	struct thread_cache *tc = arg;
	sheaf_tc = &tc_dead;
	lock_acquire(&threads_lock);
	__thread_cache_release(tc);
	lock_release(&threads_lock);
}

/* ---------------------------------------------------------------- fork */
static void fork_prepare(void)
{
	if (config_tiny)
		urcu_qsbr_call_rcu_before_fork();   /* tiny builds use call_rcu() */
	lock_acquire(&caches_lock);
	lock_acquire(&threads_lock);
	caches_fork_prepare();
	large_fork_prepare();
	page_fork_prepare();
	meta_fork_prepare();
}

static void fork_parent(void)
{
	meta_fork_parent();
	page_fork_parent();
	large_fork_parent();
	caches_fork_parent();
	lock_release(&threads_lock);
	lock_release(&caches_lock);
	if (config_tiny)
		urcu_qsbr_call_rcu_after_fork_parent();
}

static void fork_child(void)
{
	meta_fork_child();
	page_fork_child();
	large_fork_child();
	caches_fork_child();
	lock_reinit(&threads_lock);
	lock_reinit(&caches_lock);
	rcu_fork_child_begin();
	/* The other threads do not exist in the child: take back what their
	 * sheaves hold.  Their fast paths publish a pushed slot before the
	 * size (barrier() in the push), so a sheaf copied mid-push loses at
	 * most that one object, never hands out a stale one. */
	struct thread_cache *self = sheaf_tc;
	lock_acquire(&threads_lock);
	struct thread_cache *tc = threads_head;
	while (tc) {
		struct thread_cache *next = tc->next;
		if (tc != self)
			orphan_release(tc);
		tc = next;
	}
	lock_release(&threads_lock);
	rcu_fork_child();
	if (config_tiny)
		urcu_qsbr_call_rcu_after_fork_child();
}
