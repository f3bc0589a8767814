/*
 * test_node.c - cache nodes: threads spread over groups of slabs and barns.
 *
 * Run with SHEAF_OPTIONS=nodes=4 (set before sheaf_init()), whatever the
 * machine's CPU count.  What it proves:
 *   - sheaf_nr_nodes follows the option; the first thread's home is node 0
 *     and every new thread takes the least used node (the lowest of
 *     equals): three more threads get 1, 2, 3, a fifth node 0, and one
 *     started after the thread of node 2 exited gets node 2;
 *   - threads with different homes get their objects from different slabs:
 *     over rounds of allocating and freeing several sheaves each, every
 *     object a thread is handed lies in a slab of its home node, so no slab
 *     holds objects of both (a user cache and a malloc class);
 *   - objects one thread frees for another (remote frees) go in full
 *     sheaves to the freeing thread's barn, tagged with their own node, and
 *     the thread that allocated them, once its node has nothing left, takes
 *     them back from there (barn_get_remote) without a new slab;
 *   - a thread whose node has neither a full sheaf nor a free object takes
 *     another node's full sheaves before it makes a slab (once its node has
 *     a slab: a thread that starts makes its first one), and grows its own
 *     node beyond that;
 *   - what a node's last thread leaves in its barn serves the next thread
 *     to make the node its home without a new slab;
 *   - the regression this exists for: two threads running glibc's
 *     bench-malloc-thread loop (free a random slot of 1024, malloc a random
 *     size 4..32768 into it; the same size and slot sequence in both),
 *     restarted as new threads round after round as Google Benchmark does,
 *     never hold live blocks in the same cache line.  With one pool the
 *     blocks of the two came to share lines (the free marker then moved a
 *     line between cores on every free: 5x slower with 2 threads);
 *   - the statistics add up the nodes (slabs, barn sheaves), and
 *     sheaf_cache_destroy() and malloc_trim() release the slabs of every
 *     node.
 */
#include "fastpath.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "cache_stats.h"

#define NODES 4


/* ------------------------------------------------------------- workers */
/* A thread that runs the jobs it is given, one at a time, and stays alive
 * in between (its home node is kept while it lives). */
struct worker {
	pthread_t t;
	pthread_mutex_t m;
	pthread_cond_t cv;
	void (*job)(struct worker *w);
	bool stop, started;
	unsigned int node;
	/* job arguments and results */
	struct sheaf_cache *c;
	void **objs;
	unsigned int n;
	size_t size;    /* malloc_fast() size when c == NULL */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	free_fast(malloc_fast(16), "test");   /* creates the thread's state */
	pthread_mutex_lock(&w->m);
	w->node = sheaf_tc->node;
	w->started = true;
	pthread_cond_broadcast(&w->cv);
	for (;;) {
		while (!w->job && !w->stop)
			pthread_cond_wait(&w->cv, &w->m);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->m);
		w->job(w);
		pthread_mutex_lock(&w->m);
		w->job = NULL;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->m);
	return NULL;
}

static void worker_start(struct worker *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->m, NULL);
	pthread_cond_init(&w->cv, NULL);
	REQUIRE(pthread_create(&w->t, NULL, worker_main, w) == 0);
	pthread_mutex_lock(&w->m);
	while (!w->started)
		pthread_cond_wait(&w->cv, &w->m);
	pthread_mutex_unlock(&w->m);
}

/* Two workers whose homes are different nodes (the least used node is a
 * new thread's home), both on cache c. */
static void worker_pair(struct worker *a, struct worker *b, struct sheaf_cache *c)
{
	worker_start(a);
	worker_start(b);
	REQUIRE(a->node != b->node);
	a->c = b->c = c;
}

static void worker_run(struct worker *w, void (*job)(struct worker *))
{
	pthread_mutex_lock(&w->m);
	w->job = job;
	pthread_cond_broadcast(&w->cv);
	while (w->job)
		pthread_cond_wait(&w->cv, &w->m);
	pthread_mutex_unlock(&w->m);
}

static void worker_stop(struct worker *w)
{
	pthread_mutex_lock(&w->m);
	w->stop = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->m);
	pthread_join(w->t, NULL);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->m);
}

static void job_alloc(struct worker *w)
{
	for (unsigned int i = 0; i < w->n; i++) {
		w->objs[i] = w->c ? sheaf_cache_alloc(w->c) : malloc_fast(w->size);
		REQUIRE(w->objs[i] != NULL);
	}
}

static void job_free(struct worker *w)
{
	for (unsigned int i = 0; i < w->n; i++) {
		if (w->c)
			sheaf_cache_free(w->c, w->objs[i]);
		else
			free_fast(w->objs[i], "test");
		w->objs[i] = NULL;
	}
}

static const struct slab *slab_of(const void *p)
{
	uintptr_t e = pagemap_lookup((uintptr_t)p);
	REQUIRE(e && !(e & PM_TAG_LARGE));
	return (const struct slab *)e;
}

/* How many of objs[0..n) lie in slabs of a node other than `node`. */
static unsigned int off_node(void **objs, unsigned int n, unsigned int node)
{
	unsigned int bad = 0;
	for (unsigned int i = 0; i < n; i++)
		bad += slab_of(objs[i])->node != node;
	return bad;
}

/* ------------------------------------------------------------- the tests */

/* A user cache with sheaves (main() has left the tiny build out). */
static struct sheaf_cache *sheaved_cache(const char *name, size_t size)
{
	struct sheaf_cache *c = sheaf_cache_create(name, size, 0, 0, NULL);
	REQUIRE(c != NULL && c->sheaf_capacity > 0);
	return c;
}

static void test_assignment(void)
{
	CHECKF(sheaf_nr_nodes == NODES, "sheaf_nr_nodes %u", sheaf_nr_nodes);
	free_fast(malloc_fast(16), "test");
	CHECKF(sheaf_tc && sheaf_tc->node == 0, "main thread's node %u", sheaf_tc ? sheaf_tc->node : 99);
	struct worker w[5];
	for (int i = 0; i < 4; i++)
		worker_start(&w[i]);
	CHECKF(w[0].node == 1 && w[1].node == 2 && w[2].node == 3 && w[3].node == 0,
	       "nodes %u %u %u %u, want 1 2 3 0", w[0].node, w[1].node, w[2].node, w[3].node);
	worker_stop(&w[1]);   /* node 2 is now the least used */
	worker_start(&w[4]);
	CHECKF(w[4].node == 2, "a thread after node 2's exited got node %u", w[4].node);
	worker_stop(&w[0]);
	worker_stop(&w[2]);
	worker_stop(&w[3]);
	worker_stop(&w[4]);
}

/* Rounds of allocating and freeing several sheaves in two threads of
 * different homes: every object comes from the home node's slabs. */
static void separation(struct sheaf_cache *c, size_t size, const char *what)
{
	struct worker a, b;
	worker_pair(&a, &b, c);
	unsigned int cap = c ? c->sheaf_capacity : kmalloc_caches[size_to_class(size)].sheaf_capacity;
	unsigned int n = (cap ? cap : 32) * 6 + 5;
	void **oa = calloc(n, sizeof(void *)), **ob = calloc(n, sizeof(void *));
	REQUIRE(oa && ob);
	a.size = b.size = size;
	a.objs = oa;
	b.objs = ob;
	unsigned int bad = 0, shared = 0;
	for (int round = 0; round < 4; round++) {
		a.n = n - (unsigned int)round * 7;   /* uneven: sheaves end part full */
		b.n = n;
		worker_run(&a, job_alloc);
		worker_run(&b, job_alloc);
		bad += off_node(oa, a.n, a.node) + off_node(ob, b.n, b.node);
		for (unsigned int i = 0; i < a.n; i++)
			for (unsigned int j = 0; j < b.n; j += 17)
				shared += slab_of(oa[i]) == slab_of(ob[j]);
		worker_run(&b, job_free);
		worker_run(&a, job_free);
	}
	CHECKF(bad == 0, "%s: %u objects from a slab of another node", what, bad);
	CHECKF(shared == 0, "%s: %u object pairs of the two threads share a slab", what, shared);
	worker_stop(&a);
	worker_stop(&b);
	free(oa);
	free(ob);
}

static void test_separation(void)
{
	struct sheaf_cache *c = sheaf_cache_create("test-node-sep", 48, 0, 0, NULL);
	REQUIRE(c != NULL);
	separation(c, 0, "user cache");
	separation(NULL, 40, "kmalloc-48");
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* A consumer on another node frees a producer's objects: its full sheaves
 * go to its own barn, tagged with the producer's node, and the producer,
 * once its node has nothing left, takes them back without a new slab. */
static void test_remote_free(void)
{
	struct sheaf_cache *c = sheaved_cache("test-node-remote", 64);
	struct worker p, q;
	worker_pair(&p, &q, c);
	unsigned int n = c->sheaf_capacity * 10;
	void **objs = calloc(n, sizeof(void *));
	REQUIRE(objs);
	p.objs = q.objs = objs;
	p.n = q.n = n;
	worker_run(&p, job_alloc);
	CHECK(off_node(objs, n, p.node) == 0);
	worker_run(&q, job_free);   /* remote frees */
	unsigned int at_p = c->node[p.node].barn.nr_full, at_q = c->node[q.node].barn.nr_full;
	CHECKF(at_q >= 6 && at_p == 0, "full sheaves: %u in the consumer's barn, %u in the producer's",
	       at_q, at_p);
	bool tagged = true;
	for (const struct sheaf *s = c->node[q.node].barn.full; s; s = s->next)
		tagged &= s->node == p.node;
	CHECK(tagged);
	struct sheaf_cache_stats s0 = snap(c);
	/* What came back (the consumer's main and spare keep two sheaves). */
	p.n = at_q * c->sheaf_capacity;
	worker_run(&p, job_alloc);
	struct sheaf_cache_stats s1 = snap(c);
	CHECK(off_node(objs, p.n, p.node) == 0);
	CHECKF(DELTA(s0, s1, slab_alloc) == 0, "%llu slabs made though the objects were back",
	       (unsigned long long)DELTA(s0, s1, slab_alloc));
	CHECKF(DELTA(s0, s1, barn_get_remote) == at_q, "barn_get_remote %llu, want %u",
	       (unsigned long long)DELTA(s0, s1, barn_get_remote), at_q);
	worker_run(&p, job_free);
	worker_stop(&p);
	worker_stop(&q);
	free(objs);
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* A thread whose node has nothing left (once it has a slab of its own: a
 * thread that starts makes one first) takes another node's full sheaves
 * before it makes a slab; the statistics add the nodes up. */
static void test_remote_steal(void)
{
	struct sheaf_cache *c = sheaved_cache("test-node-steal", 64);
	struct worker a, b;
	worker_pair(&a, &b, c);
	unsigned int cap = c->sheaf_capacity, n = cap * 8;
	void **oa = calloc(n, sizeof(void *)), **ob = calloc(n, sizeof(void *));
	REQUIRE(oa && ob);
	a.objs = oa;
	b.objs = ob;
	a.n = n;
	worker_run(&a, job_alloc);
	worker_run(&a, job_free);   /* main and spare keep two sheaves, the barn the rest */
	unsigned int parked = c->node[a.node].barn.nr_full;
	CHECKF(parked == 6, "%u full sheaves parked at a's node, want 6", parked);
	/* b's first slab, used up (its objects stay allocated). */
	unsigned int first = c->objects_per_slab;
	REQUIRE(first % cap == 0);
	void **warm = calloc(first, sizeof(void *));
	REQUIRE(warm);
	b.objs = warm;
	b.n = first;
	struct sheaf_cache_stats sw = snap(c);
	worker_run(&b, job_alloc);
	struct sheaf_cache_stats s0 = snap(c);
	CHECKF(DELTA(sw, s0, slab_alloc) == 1 && DELTA(sw, s0, barn_get_remote) == 0,
	       "a starting thread: %llu slabs, %llu sheaves taken from another node",
	       (unsigned long long)DELTA(sw, s0, slab_alloc),
	       (unsigned long long)DELTA(sw, s0, barn_get_remote));
	b.objs = ob;
	b.n = parked * cap;
	worker_run(&b, job_alloc);
	struct sheaf_cache_stats s1 = snap(c);
	CHECKF(DELTA(s0, s1, barn_get_remote) == parked, "barn_get_remote %llu, want %u",
	       (unsigned long long)DELTA(s0, s1, barn_get_remote), parked);
	CHECKF(DELTA(s0, s1, slab_alloc) == 0, "%llu slabs made with %u full sheaves elsewhere",
	       (unsigned long long)DELTA(s0, s1, slab_alloc), parked);
	/* Beyond that, b's node grows. */
	void **more = calloc(cap * 2, sizeof(void *));
	REQUIRE(more);
	b.objs = more;
	b.n = cap * 2;
	worker_run(&b, job_alloc);
	struct sheaf_cache_stats s2 = snap(c);
	CHECK(DELTA(s1, s2, slab_alloc) > 0);
	CHECK(off_node(more, cap * 2, b.node) == 0);
	worker_run(&b, job_free);
	b.objs = ob;
	b.n = parked * cap;
	worker_run(&b, job_free);
	b.objs = warm;
	b.n = first;
	worker_run(&b, job_free);

	/* The statistics add the nodes up. */
	struct sheaf_cache_stats st = snap(c);
	size_t slabs = 0, full = 0;
	for (unsigned int k = 0; k < sheaf_nr_nodes; k++) {
		slabs += c->node[k].nr_partial + c->node[k].nr_empty + c->node[k].nr_full;
		full += c->node[k].barn.nr_full;
	}
	CHECK(st.slabs == slabs && st.barn_full == full);
	CHECK(c->node[a.node].nr_full + c->node[a.node].nr_partial > 0 &&
	      c->node[b.node].nr_full + c->node[b.node].nr_partial > 0);
	worker_stop(&a);
	worker_stop(&b);
	free(oa);
	free(ob);
	free(more);
	free(warm);
	/* Destroy releases the slabs of every node. */
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* What a node's last thread leaves in the node's barn (its full sheaves)
 * serves the next thread to make the node its home (the next one to
 * start) without a new slab. */
static void test_orphan_node(void)
{
	struct sheaf_cache *c = sheaved_cache("test-node-orphan", 64);
	struct worker a, b;
	worker_start(&a);
	REQUIRE(a.node != sheaf_tc->node);
	unsigned int n = c->sheaf_capacity * 4 + 5;
	void **objs = calloc(n, sizeof(void *));
	REQUIRE(objs);
	a.c = c;
	a.objs = objs;
	a.n = n;
	worker_run(&a, job_alloc);
	worker_run(&a, job_free);
	unsigned int node = a.node;
	worker_stop(&a);
	unsigned int parked = c->node[node].barn.nr_full;
	CHECKF(parked * c->sheaf_capacity >= n, "%u full sheaves left for %u objects", parked, n);
	struct sheaf_cache_stats s0 = snap(c);
	worker_start(&b);
	CHECK(b.node == node);
	b.c = c;
	b.objs = objs;
	b.n = n;
	worker_run(&b, job_alloc);
	struct sheaf_cache_stats s1 = snap(c);
	CHECKF(DELTA(s0, s1, slab_alloc) == 0, "%llu slabs made with the last thread's objects left",
	       (unsigned long long)DELTA(s0, s1, slab_alloc));
	CHECK(DELTA(s0, s1, barn_get_remote) == 0);
	CHECK(off_node(objs, n, node) == 0);
	worker_run(&b, job_free);
	worker_stop(&b);
	free(objs);
	CHECK(sheaf_cache_destroy(c) == 0);
}

/* -------------------------------------------- bench-malloc-thread shape */
#define GT_SLOTS 1024
#define GT_SIZES 8000
#define GT_OFFSETS 4096
static unsigned int gt_size[GT_SIZES], gt_offset[GT_OFFSETS];

struct gt_arg {
	void **slot;
	long iters;
	uintptr_t *lines;   /* out: the line of every live block at the end */
	unsigned int node;
};
static unsigned int round_shared[8], round_node[8];

static pthread_barrier_t gt_start;

static void *gt_thread(void *arg)
{
	struct gt_arg *g = arg;
	unsigned int os = 0, bs = 0;
	/* Both threads have their state (and home) before either starts, as
	 * Google Benchmark starts its threads together. */
	free_fast(malloc_fast(16), "test");
	pthread_barrier_wait(&gt_start);
	for (long i = 0; i < g->iters; i++) {
		os = os == GT_OFFSETS - 1 ? 0 : os + 1;
		bs = bs == GT_SIZES - 1 ? 0 : bs + 1;
		void **s = &g->slot[gt_offset[os]];
		if (*s)
			free_fast(*s, "test");
		*s = malloc_fast(gt_size[bs]);
		REQUIRE(*s != NULL);
	}
	for (int k = 0; k < GT_SLOTS; k++)
		g->lines[k] = g->slot[k] ? (uintptr_t)g->slot[k] / CACHELINE : 0;
	g->node = sheaf_tc->node;
	for (int k = 0; k < GT_SLOTS; k++)
		if (g->slot[k])
			free_fast(g->slot[k], "test");
	memset(g->slot, 0, GT_SLOTS * sizeof(void *));
	return NULL;
}

static int cmp_line(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

static void test_no_shared_lines(void)
{
	uint64_t seed = 88;
	for (int i = 0; i < GT_SIZES; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		double u = (double)(seed >> 11) * 0x1.0p-53;
		gt_size[i] = (unsigned int)(1.0 / (u * (1.0 / 32768 - 0.25) + 0.25));
	}
	for (int i = 0; i < GT_OFFSETS; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		gt_offset[i] = (unsigned int)((seed >> 33) % GT_SLOTS);
	}
	static void *slots[2][GT_SLOTS];
	static uintptr_t lines[2][GT_SLOTS];
	unsigned int shared_total = 0;
	/* The main thread is one of the two, as in Google Benchmark; the
	 * other is a new thread every round, and the rounds grow. */
	for (long iters = 1000, round = 0; round < 6; round++, iters *= 3) {
		struct gt_arg g0 = { slots[0], iters, lines[0], 0 }, g1 = { slots[1], iters, lines[1], 0 };
		pthread_t t;
		pthread_barrier_init(&gt_start, NULL, 2);
		REQUIRE(pthread_create(&t, NULL, gt_thread, &g1) == 0);
		gt_thread(&g0);
		pthread_join(t, NULL);
		pthread_barrier_destroy(&gt_start);
		qsort(lines[1], GT_SLOTS, sizeof(uintptr_t), cmp_line);
		unsigned int shared = 0;
		for (int k = 0; k < GT_SLOTS; k++)
			if (lines[0][k] &&
			    bsearch(&lines[0][k], lines[1], GT_SLOTS, sizeof(uintptr_t), cmp_line))
				shared++;
		shared_total += shared;
		round_shared[round] = shared;
		round_node[round] = g1.node;
	}
	if (shared_total)
		for (int r = 0; r < 6; r++)
			fprintf(stderr, "round %d: %u blocks on shared lines; nodes %u and %u\n", r,
				round_shared[r], sheaf_tc->node, round_node[r]);
	CHECKF(shared_total == 0, "%u live blocks of one thread shared a line with the other's",
	       shared_total);
}

static void test_trim(void)
{
	/* Empty slabs of several nodes, then malloc_trim(): none left. */
	struct sheaf_cache *c = sheaf_cache_create("test-node-trim", 128, 0, SHEAF_NO_SHEAVES, NULL);
	REQUIRE(c != NULL);
	struct worker w[3];
	unsigned int n = c->objects_per_slab * 3;
	void **objs = calloc(n, sizeof(void *));
	REQUIRE(objs);
	for (int i = 0; i < 3; i++) {
		worker_start(&w[i]);
		w[i].c = c;
		w[i].objs = objs;
		w[i].n = n;
		worker_run(&w[i], job_alloc);
		worker_run(&w[i], job_free);
	}
	unsigned int nodes_with_slabs = 0;
	for (unsigned int k = 0; k < sheaf_nr_nodes; k++)
		nodes_with_slabs += c->node[k].nr_empty > 0;
	CHECKF(nodes_with_slabs >= 2, "empty slabs on %u nodes", nodes_with_slabs);
	do_malloc_trim(0);
	CHECK(snap(c).slabs == 0);
	for (int i = 0; i < 3; i++)
		worker_stop(&w[i]);
	free(objs);
	CHECK(sheaf_cache_destroy(c) == 0);
}

int main(int argc, char **argv)
{
	/* The options are read when the library loads: run again with
	 * nodes=4 added to what the caller set (valgrind.sh sets
	 * valgrind=0). */
	(void)argc;
	const char *opts = getenv("SHEAF_OPTIONS");
	if (sheaf_on_valgrind)
		SKIP("under valgrind with sheaves off (valgrind.sh runs it with valgrind=0:nodes=4)");
	if ((!opts || !strstr(opts, "nodes=")) && sheaf_under_valgrind)
		SKIP("under valgrind: /proc/self/exe is valgrind; set SHEAF_OPTIONS=nodes=4");
	if (!opts || !strstr(opts, "nodes=")) {
		char buf[512];
		snprintf(buf, sizeof(buf), "%s%snodes=%d", opts ? opts : "", opts && *opts ? ":" : "",
			 NODES);
		setenv("SHEAF_OPTIONS", buf, 1);
		execv("/proc/self/exe", argv);
		perror("execv /proc/self/exe");
		return 1;
	}
	sheaf_init();
	if (config_tiny) {
		CHECK(sheaf_nr_nodes == 1);   /* the tiny build keeps one node */
		return check_done("test_node");
	}
	test_assignment();
	test_separation();
	test_remote_free();
	test_remote_steal();
	test_orphan_node();
	test_no_shared_lines();
	test_trim();
	return check_done("test_node");
}
