/*
 * bench_sheaf - benchmarks of what only sheaf has, on Google Benchmark, in C.
 *
 * Linked with libsheaf (so its malloc is sheaf's) and liburcu-qsbr.  Rows:
 *
 *   cache_alloc_free, sheaf_malloc_free   slab cache API against sheaf's own
 *                                         malloc of the same size
 *   cache_bulk, cache_loop                sheaf_cache_alloc_bulk/free_bulk
 *                                         against the same objects one by one
 *   rcu/<method>                          freeing after a grace period:
 *                                         rcu_free() (rcu_head or rcu_ptr
 *                                         field), rcu_free_mightsleep(),
 *                                         rcu_free_nolock() from normal
 *                                         context and from a signal handler,
 *                                         liburcu's call_rcu()+free() and
 *                                         defer_rcu(free) as baselines, with
 *                                         QSBR updaters and a QSBR reader
 *   cache_destroy                         sheaf_cache_destroy() latency against
 *                                         the number of other live caches and
 *                                         of threads holding sheaves
 *
 * These rows are reported for sheaf only: the program cannot run on another
 * malloc.  (Preloading jemalloc would give malloc()/free() to jemalloc while
 * rcu_free() and the cache API stay sheaf's, and sheaf would diagnose
 * jemalloc's pointers as foreign.)  The call_rcu/defer_rcu baselines use
 * sheaf's malloc and free, so the rcu rows compare the deferral mechanisms
 * with the allocator held constant.  Same conventions as bench_malloc.c:
 * thread CPU time for the single-threaded rows, process CPU time less the
 * reader thread's for the rcu rows (so that the drain thread's and
 * liburcu's threads' work counts, and waiting in a barrier does not; see
 * bm_rcu()), wall-clock time
 * for cache_destroy (its latency is waiting), items = the row's op over all
 * threads, counter peak_rss_kib, blocks written or escaping.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
/* <urcu-qsbr.h> before <sheaf/rcu.h>: the latter includes <urcu/call-rcu.h>,
 * whose declarations must see the qsbr flavour's name map (call_rcu is
 * urcu_qsbr_call_rcu) or call_rcu() and rcu_barrier() end up undeclared. */
#include <urcu-qsbr.h>
#include <sheaf.h>
#include <sheaf/rcu.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "bench_util.h"

/* ------------------------------------------------------- slab cache API -- */

static struct sheaf_cache *make_cache(gb_state *st, const char *name, size_t size)
{
	struct sheaf_cache *c = sheaf_cache_create(name, size, 0, 0, NULL);

	if (!c)
		gb_skip_with_error(st, "sheaf_cache_create failed");
	return c;
}

static void destroy_cache(gb_state *st, struct sheaf_cache *c)
{
	if (c && sheaf_cache_destroy(c) != 0)
		gb_skip_with_error(st, "sheaf_cache_destroy failed");
}

/* op = sheaf_cache_alloc + write + sheaf_cache_free, one thread. */
static void bm_cache_alloc_free(gb_state *st, void *arg)
{
	size_t size = (size_t)gb_state_range(st, 0);
	struct sheaf_cache *c = make_cache(st, "bench", size);

	(void)arg;
	GB_FOR(st, i) {
		void *p = sheaf_cache_alloc(c);

		if (!p)
			die_oom();
		touch(p, size);
		sheaf_cache_free(c, p);
	}
	destroy_cache(st, c);
	report_row(st, gb_state_iterations(st));
}

/* The baseline: the same through sheaf's malloc (size class lookup). */
static void bm_sheaf_malloc_free(gb_state *st, void *arg)
{
	size_t size = (size_t)gb_state_range(st, 0);

	(void)arg;
	GB_FOR(st, i) {
		void *p = sheaf_malloc(size);

		if (!p)
			die_oom();
		touch(p, size);
		sheaf_free(p);
	}
	report_row(st, gb_state_iterations(st));
}

#define BULK_SIZE 64

/*
 * arg != NULL: n objects by sheaf_cache_alloc_bulk(), then
 * sheaf_cache_free_bulk(); NULL: the same n objects one call each.  Every
 * object is written.  op = one object (allocated and freed).
 */
static void bm_cache_bulk(gb_state *st, void *arg)
{
	bool bulk = arg != NULL;
	size_t n = (size_t)gb_state_range(st, 0);
	struct sheaf_cache *c = make_cache(st, "bench-bulk", BULK_SIZE);
	void **obj = xmalloc(n * sizeof(*obj));

	GB_FOR(st, it) {
		if (bulk) {
			if (sheaf_cache_alloc_bulk(c, n, obj) != n)
				die_oom();
		} else {
			for (size_t i = 0; i < n; i++)
				if (!(obj[i] = sheaf_cache_alloc(c)))
					die_oom();
		}
		for (size_t i = 0; i < n; i++)
			touch(obj[i], BULK_SIZE);
		if (bulk) {
			sheaf_cache_free_bulk(c, n, obj);
		} else {
			for (size_t i = 0; i < n; i++)
				sheaf_cache_free(c, obj[i]);
		}
	}
	free(obj);
	destroy_cache(st, c);
	report_row(st, gb_state_iterations(st) * (int64_t)n);
}

/* ------------------------------------------------------------------ rcu -- */

/* 64 bytes with the field first, as a typical RCU-protected node. */
struct rnode_head {
	struct rcu_head rh;
	char payload[48];
};
struct rnode_ptr {
	struct rcu_ptr rp;
	char payload[56];
};

enum rcu_method {
	R_RCU_FREE, R_RCU_FREE_PTR, R_MIGHTSLEEP, R_NOLOCK, R_NOLOCK_SIGNAL, R_CALL_RCU, R_DEFER_RCU
};

static void free_head_cb(struct rcu_head *head)
{
	free(head);   /* rh is the first member */
}

/*
 * rcu_free_nolock() from a signal handler: the updater collects its nodes
 * and raises SIGUSR1 at itself every SIG_BATCH nodes; the handler (run
 * before raise() returns) frees them all with rcu_free_nolock().  The
 * signal's cost is spread over SIG_BATCH objects, as a handler that frees
 * a few objects per signal would see it.
 */
#define SIG_BATCH 64
static __thread struct rnode_ptr *sig_nodes[SIG_BATCH];
static __thread volatile sig_atomic_t sig_count;

static void nolock_handler(int sig)
{
	(void)sig;
	for (sig_atomic_t k = 0; k < sig_count; k++)
		rcu_free_nolock(sig_nodes[k], rp);
	sig_count = 0;
}

static void install_nolock_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = nolock_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
}
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;

/*
 * The reader: a registered QSBR thread, started with the first rcu row and
 * running until the process exits (the driver runs one row per process).
 * It reads a published pointer inside read-side critical sections and
 * reports a quiescent state after each; every 256 sections it goes offline
 * and sleeps 100 us, so that on a 2-core machine it does not take a core
 * from the updaters, while still making each grace period wait for it.
 */
static int *published;
static pthread_once_t reader_once = PTHREAD_ONCE_INIT;
static clockid_t reader_clock;   /* the reader's CPU-time clock */

static void *reader_thread(void *arg)
{
	static int value = 1;
	unsigned long sum = 0;

	(void)arg;
	rcu_assign_pointer(published, &value);
	rcu_register_thread();
	for (;;) {
		for (int k = 0; k < 256; k++) {
			rcu_read_lock();
			sum += (unsigned long)*rcu_dereference(published);
			rcu_read_unlock();
			rcu_quiescent_state();
		}
		gb_do_not_optimize(&sum);
		rcu_thread_offline();
		usleep(100);
		rcu_thread_online();
	}
	return NULL;
}

static void start_reader(void)
{
	pthread_t t;

	start_thread(&t, reader_thread, NULL);
	if (pthread_getcpuclockid(t, &reader_clock))
		reader_clock = CLOCK_THREAD_CPUTIME_ID;   /* never: then nothing is subtracted */
	pthread_detach(t);
}

static double clock_s(clockid_t c)
{
	struct timespec ts;

	if (clock_gettime(c, &ts))
		return 0.0;
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * One op: malloc a 64-byte node, write it, hand it to the method.  Every
 * updater is a registered QSBR thread that reports a quiescent state every
 * 32 ops (call_rcu and defer_rcu require registration; rcu_free does not,
 * but gets the same treatment).  Each batch ends, inside the timed region,
 * with the method's barrier (offline, as QSBR requires), so the rate
 * includes freeing everything, not just queueing it: rcu_free_barrier(),
 * rcu_barrier() or rcu_defer_barrier().  Counters (sheaf's methods): the
 * objects freed per grace period that sheaf's drain thread waited for.
 *
 * Clock: the process's CPU time minus the reader's, per batch (manual
 * time; with 2 updaters Google Benchmark averages their two figures for the
 * same interval).  That counts the updaters, sheaf's drain thread and
 * liburcu's call_rcu and defer threads, whose work is the cost being
 * compared, and leaves out the reader, whose CPU time grows with the wall
 * time of the run rather than with its work, and all waiting.
 *
 * QSBR discipline: an updater is online only inside its batch.  Google
 * Benchmark's start and stop barriers block, and a registered thread that
 * blocks online stalls every grace period; a grace period holds liburcu's
 * registry lock, which the next thread's rcu_register_thread() needs.
 *
 * defer_rcu: its updaters stay offline through the batch.  defer_rcu()
 * with a full queue runs synchronize_rcu() holding liburcu's defer mutex;
 * a second updater that blocks on that mutex while online stalls the grace
 * period for good (seen with 2 updaters).  liburcu 0.13 also asserts in
 * rcu_defer_register_thread() when a thread registers again after having
 * used defer_rcu(), so thread 0 (the main thread, the same in every run)
 * registers once and stays registered until exit; the other threads are
 * new in every run and unregister at its end.
 */
static __thread bool defer_registered;

/* liburcu's destructor asserts that no thread is registered for defer_rcu. */
static void defer_unregister_main(void)
{
	rcu_defer_unregister_thread();
}

static void bm_rcu(gb_state *st, void *arg)
{
	enum rcu_method m = (enum rcu_method)(uintptr_t)arg;
	struct sheaf_stats s0, s1;

	pthread_once(&reader_once, start_reader);
	if (m == R_NOLOCK_SIGNAL)
		pthread_once(&handler_once, install_nolock_handler);
	rcu_register_thread();
	if (m == R_DEFER_RCU && !defer_registered) {
		if (rcu_defer_register_thread()) {
			gb_skip_with_error(st, "rcu_defer_register_thread failed");
			rcu_unregister_thread();
			return;
		}
		defer_registered = true;
		if (gb_state_thread_index(st) == 0)
			atexit(defer_unregister_main);
	}
	rcu_thread_offline();
	if (gb_state_thread_index(st) == 0)
		sheaf_stats_get(&s0);

	int64_t n = gb_max_iterations(st);
	while (gb_keep_running_batch(st, n)) {
		double p0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), r0 = clock_s(reader_clock);

		if (m != R_DEFER_RCU)
			rcu_thread_online();
		for (int64_t i = 0; i < n; i++) {
			if (m == R_RCU_FREE_PTR || m == R_NOLOCK || m == R_NOLOCK_SIGNAL) {
				struct rnode_ptr *o = malloc(sizeof(*o));

				if (!o)
					die_oom();
				o->payload[0] = (char)i;
				gb_do_not_optimize(o);
				if (m == R_RCU_FREE_PTR) {
					rcu_free(o, rp);
				} else if (m == R_NOLOCK) {
					rcu_free_nolock(o, rp);
				} else {
					sig_nodes[sig_count] = o;
					if (++sig_count == SIG_BATCH)
						raise(SIGUSR1);
				}
			} else {
				struct rnode_head *o = malloc(sizeof(*o));

				if (!o)
					die_oom();
				o->payload[0] = (char)i;
				gb_do_not_optimize(o);
				switch (m) {
				case R_RCU_FREE:
					rcu_free(o, rh);
					break;
				case R_MIGHTSLEEP:
					rcu_free_mightsleep(o);
					break;
				case R_CALL_RCU:
					call_rcu(&o->rh, free_head_cb);
					break;
				default:
					defer_rcu(free, o);
					break;
				}
			}
			if ((i & 31) == 31 && m != R_DEFER_RCU)
				rcu_quiescent_state();
		}
		if (m == R_NOLOCK_SIGNAL && sig_count)
			raise(SIGUSR1);   /* the last, partial batch */
		rcu_thread_offline();
		if (m == R_CALL_RCU)
			rcu_barrier();
		else if (m == R_DEFER_RCU)
			rcu_defer_barrier();
		else if (rcu_free_barrier() != 0)
			gb_skip_with_error(st, "rcu_free_barrier failed");
		gb_set_iteration_time(st, (clock_s(CLOCK_PROCESS_CPUTIME_ID) - p0) -
					  (clock_s(reader_clock) - r0));
	}
	if (defer_registered && gb_state_thread_index(st) != 0) {
		rcu_defer_unregister_thread();
		defer_registered = false;
	}
	rcu_unregister_thread();
	if (gb_state_thread_index(st) == 0) {
		sheaf_stats_get(&s1);
		if (m != R_CALL_RCU && m != R_DEFER_RCU && s1.rcu_grace_periods > s0.rcu_grace_periods)
			gb_counter_set(st, "objects_per_gp",
				       (double)(s1.rcu_objects_freed - s0.rcu_objects_freed) /
					       (double)(s1.rcu_grace_periods - s0.rcu_grace_periods),
				       GB_COUNTER_DEFAULT);
	}
	report_row(st, gb_state_iterations(st) * gb_state_threads(st));
}

/* -------------------------------------------------------- cache destroy -- */

/*
 * sheaf_cache_destroy() latency.  Before the timed destroy, untimed: `live`
 * other caches exist, each with one object allocated; `threads` helper
 * threads have each allocated and freed objects of the cache to be
 * destroyed (so their sheaves hold some of it), and with rcu = 1 each has
 * also rcu_free()'d one object of that cache and one object of every live
 * cache, so that rcu_free sheaves of all caches are pending in all threads
 * (the situation of the kernel's kvfree_rcu_barrier() regression: a barrier
 * that flushes every cache costs caches x threads, sheaf's per-cache one
 * should cost threads).  Timed: one sheaf_cache_destroy().  op = one destroy.
 */
struct destroy_ctx {
	pthread_barrier_t go, done;
	struct sheaf_cache *target;
	struct sheaf_cache **live;
	size_t nlive;
	bool rcu, stop;
};

struct dnode {
	struct rcu_ptr rp;
	char payload[56];
};

static void *destroy_helper(void *arg)
{
	struct destroy_ctx *d = arg;

	for (;;) {
		pthread_barrier_wait(&d->go);
		if (d->stop)
			break;
		void *keep[8];

		for (int k = 0; k < 8; k++) {
			if (!(keep[k] = sheaf_cache_alloc(d->target)))
				die_oom();
			touch(keep[k], sizeof(struct dnode));
		}
		for (int k = 0; k < 8; k++)
			sheaf_cache_free(d->target, keep[k]);
		if (d->rcu) {
			struct dnode *o = sheaf_cache_alloc(d->target);

			if (!o)
				die_oom();
			rcu_free(o, rp);
			for (size_t k = 0; k < d->nlive; k++) {
				if (!(o = sheaf_cache_alloc(d->live[k])))
					die_oom();
				rcu_free(o, rp);
			}
		}
		pthread_barrier_wait(&d->done);
	}
	return NULL;
}

static void bm_cache_destroy(gb_state *st, void *arg)
{
	struct destroy_ctx d = { .nlive = (size_t)gb_state_range(st, 0),
		                 .rcu = gb_state_range(st, 2) != 0 };
	int nthreads = (int)gb_state_range(st, 1);
	pthread_t *t = xmalloc((size_t)nthreads * sizeof(*t));
	void **live_obj = xmalloc((d.nlive + 1) * sizeof(*live_obj));
	char name[32];

	(void)arg;
	d.live = xmalloc((d.nlive + 1) * sizeof(*d.live));
	for (size_t k = 0; k < d.nlive; k++) {
		snprintf(name, sizeof(name), "live-%zu", k);
		if (!(d.live[k] = make_cache(st, name, sizeof(struct dnode))))
			return;
		if (!(live_obj[k] = sheaf_cache_alloc(d.live[k])))
			die_oom();
	}
	pthread_barrier_init(&d.go, NULL, (unsigned)nthreads + 1);
	pthread_barrier_init(&d.done, NULL, (unsigned)nthreads + 1);
	for (int k = 0; k < nthreads; k++)
		start_thread(&t[k], destroy_helper, &d);

	GB_FOR(st, i) {
		gb_pause(st);
		d.target = make_cache(st, "doomed", sizeof(struct dnode));
		pthread_barrier_wait(&d.go);     /* helpers fill their sheaves */
		pthread_barrier_wait(&d.done);   /* and are parked again */
		gb_resume(st);
		if (sheaf_cache_destroy(d.target) != 0)
			gb_skip_with_error(st, "sheaf_cache_destroy failed");
	}

	d.stop = true;
	pthread_barrier_wait(&d.go);
	for (int k = 0; k < nthreads; k++)
		pthread_join(t[k], NULL);
	pthread_barrier_destroy(&d.go);
	pthread_barrier_destroy(&d.done);
	rcu_free_barrier();   /* the live caches' pending objects */
	for (size_t k = 0; k < d.nlive; k++) {
		sheaf_cache_free(d.live[k], live_obj[k]);
		destroy_cache(st, d.live[k]);
	}
	free(d.live);
	free(live_obj);
	free(t);
	report_row(st, gb_state_iterations(st));
}

/* ---------------------------------------------------------------- main -- */

int main(int argc, char **argv)
{
	static const int64_t destroy_live[] = { 0, 1000 };
	static const int64_t destroy_threads[] = { 1, 8 };
	static const int64_t destroy_rcu[] = { 0, 1 };
	static const int64_t *const destroy_lists[] = { destroy_live, destroy_threads, destroy_rcu };
	static const size_t destroy_lens[] = { 2, 2, 2 };
	static const char *const destroy_names[] = { "live_caches", "threads", "rcu" };
	static const struct {
		const char *name;
		enum rcu_method m;
	} rcu_rows[] = {
		{ "rcu/rcu_free", R_RCU_FREE },
		{ "rcu/rcu_free_ptr", R_RCU_FREE_PTR },
		{ "rcu/rcu_free_mightsleep", R_MIGHTSLEEP },
		{ "rcu/rcu_free_nolock", R_NOLOCK },
		{ "rcu/rcu_free_nolock_signal", R_NOLOCK_SIGNAL },
		{ "rcu/call_rcu", R_CALL_RCU },
		{ "rcu/defer_rcu", R_DEFER_RCU },
	};
	gb_bench *b;

	gb_add_custom_context("program", "bench_sheaf (linked with libsheaf)");
	gb_add_custom_context("sheaf_version", SHEAF_VERSION);
	gb_add_custom_context("sheaf_build", (sheaf_build_flags() & SHEAF_BUILD_TINY) ? "tiny" :
		                             (sheaf_build_flags() & SHEAF_BUILD_DEBUG) ? "debug" :
		                                                                         "default");

	gb_arg(gb_arg(row("cache_alloc_free", bm_cache_alloc_free, NULL), 64), 256);
	gb_arg(gb_arg(row("sheaf_malloc_free", bm_sheaf_malloc_free, NULL), 64), 256);
	b = row("cache_bulk", bm_cache_bulk, (void *)1);
	gb_arg(gb_arg(gb_arg(b, 16), 128), 1024);
	b = row("cache_loop", bm_cache_bulk, NULL);
	gb_arg(gb_arg(gb_arg(b, 16), 128), 1024);
	for (size_t k = 0; k < sizeof(rcu_rows) / sizeof(rcu_rows[0]); k++)
		gb_use_manual_time(gb_threads(gb_threads(row(rcu_rows[k].name, bm_rcu,
							     (void *)(uintptr_t)rcu_rows[k].m), 1), 2));
	b = row_wall("cache_destroy", bm_cache_destroy, NULL);
	gb_args_product(gb_arg_names(b, destroy_names, 3), destroy_lists, destroy_lens, 3);

	return gb_main(argc, argv);
}
