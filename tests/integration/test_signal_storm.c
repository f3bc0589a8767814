/*
 * test_signal_storm.c - allocation from signal handlers, under a storm.
 *
 * Worker threads run malloc/free/realloc/rcu_free-heavy loops while a
 * per-thread POSIX timer delivers SIGUSR1 to each of them every 100 us
 * (10 kHz asked; what the kernel delivers on a loaded 2-core machine is
 * printed).  The handler interrupts whatever the worker is doing - sheaf's
 * fast paths, slow paths holding locks, rcu_free() with its slot claimed -
 * and calls sheaf_malloc_nolock(), sheaf_free_nolock() and
 * rcu_free_nolock(), on its own objects and on objects the worker left for
 * it in a mailbox.  Every block carries a pattern checked before it is
 * freed.
 *
 * Proves: no deadlock (alarm), no corruption (patterns), and exact
 * accounting: after rcu_free_barrier() the allocator's live-object count
 * (allocs - frees) is back where it was before the storm - nothing lost,
 * nothing freed twice.  Also that objects freed with rcu_free_nolock() wait
 * for a grace period: a registered reader holds one and checks its canary.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "check.h"
#include "sheaf.h"
#include "sheaf/rcu.h"

#define WORKERS 2
#define SLOTS 256
#define HSLOTS 64

struct obj {
	uint64_t canary;         /* offset 0: what a premature free changes */
	struct rcu_ptr rp;
	uint32_t size;
	unsigned char data[];
};

struct worker {
	pthread_t tid;
	pid_t ktid;
	timer_t timer;
	unsigned int seed;
	struct obj *hslot[HSLOTS];   /* owned by the handler only */
	_Atomic(struct obj *) mailbox;  /* worker -> handler */
	atomic_ulong signals, h_alloc, h_alloc_fail, h_free, h_rcu, h_mail;
	unsigned long ops;
	int corrupt;
};

static struct worker workers[WORKERS];
static __thread struct worker *self;
static atomic_bool stop;
static pthread_barrier_t start_bar, end_bar, done_bar;

static uint64_t canary_of(const struct obj *o) { return 0xc0ffee0000000000ull ^ (uintptr_t)o; }

static void fill(struct obj *o, uint32_t size)
{
	o->canary = canary_of(o);
	o->size = size;
	for (uint32_t i = 0; i < size; i++)
		o->data[i] = (unsigned char)((uintptr_t)o + i);
}

static bool intact(const struct obj *o)
{
	if (o->canary != canary_of(o))
		return false;
	for (uint32_t i = 0; i < o->size; i++)
		if (o->data[i] != (unsigned char)((uintptr_t)o + i))
			return false;
	return true;
}

static void handler(int sig)
{
	(void)sig;
	int saved = errno;
	struct worker *w = self;
	if (!w)
		return;
	atomic_fetch_add_explicit(&w->signals, 1, memory_order_relaxed);
	unsigned int r = (unsigned int)rand_r(&w->seed);
	struct obj **slot = &w->hslot[r % HSLOTS];
	if (*slot) {
		if (!intact(*slot))
			w->corrupt++;
		if (r & 0x100) {
			rcu_free_nolock(*slot, rp);
			atomic_fetch_add_explicit(&w->h_rcu, 1, memory_order_relaxed);
		} else {
			sheaf_free_nolock(*slot);
			atomic_fetch_add_explicit(&w->h_free, 1, memory_order_relaxed);
		}
		*slot = NULL;
	} else {
		uint32_t size = 8 + (r >> 12) % 200;
		struct obj *o = sheaf_malloc_nolock(sizeof(struct obj) + size);
		if (o) {
			fill(o, size);
			*slot = o;
			atomic_fetch_add_explicit(&w->h_alloc, 1, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&w->h_alloc_fail, 1, memory_order_relaxed);
		}
	}
	struct obj *m = atomic_exchange_explicit(&w->mailbox, NULL, memory_order_acquire);
	if (m) {
		if (!intact(m))
			w->corrupt++;
		if (r & 0x200)
			rcu_free_nolock(m, rp);
		else
			sheaf_free_nolock(m);
		atomic_fetch_add_explicit(&w->h_mail, 1, memory_order_relaxed);
	}
	errno = saved;
}

static struct obj *new_obj(struct worker *w)
{
	uint32_t size = (uint32_t)rand_r(&w->seed) % 3000;
	if ((rand_r(&w->seed) & 63) == 0)
		size = 40000 + (uint32_t)rand_r(&w->seed) % 30000;   /* large */
	struct obj *o = malloc(sizeof(struct obj) + size);
	if (!o)
		abort();
	fill(o, size);
	return o;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct obj *slots[SLOTS] = { 0 };
	w->ktid = (pid_t)syscall(SYS_gettid);
	pthread_barrier_wait(&start_bar);
	self = w;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned int i = (unsigned int)rand_r(&w->seed) % SLOTS;
		unsigned int op = (unsigned int)rand_r(&w->seed) % 8;
		struct obj *o = slots[i];
		if (o && !intact(o))
			w->corrupt++;
		if (!o) {
			slots[i] = new_obj(w);
		} else if (op < 3) {
			free(o);
			slots[i] = NULL;
		} else if (op < 5) {
			rcu_free(o, rp);
			slots[i] = NULL;
		} else if (op < 6) {
			uint32_t size = (uint32_t)rand_r(&w->seed) % 5000;
			struct obj *n = realloc(o, sizeof(struct obj) + size);
			if (!n)
				abort();
			fill(n, size);
			slots[i] = n;
		} else if (op < 7) {
			/* Leave it for the handler, if the mailbox is free. */
			struct obj *expect = NULL;
			if (atomic_compare_exchange_strong(&w->mailbox, &expect, o))
				slots[i] = NULL;
		} else {
			void *p = calloc(1, 1 + (size_t)(rand_r(&w->seed) % 700));
			free(p);
		}
		w->ops++;
	}
	/* Quiet down: no more signals for this thread, then clean up. */
	self = NULL;
	pthread_barrier_wait(&end_bar);
	for (unsigned int i = 0; i < SLOTS; i++)
		free(slots[i]);
	for (unsigned int i = 0; i < HSLOTS; i++)
		free(w->hslot[i]);
	struct obj *m = atomic_exchange(&w->mailbox, NULL);
	free(m);
	pthread_barrier_wait(&done_bar);   /* main measures with us alive */
	pthread_barrier_wait(&done_bar);
	return NULL;
}

static int64_t live(const struct sheaf_stats *s) { return (int64_t)(s->allocs - s->frees); }

/* A registered reader keeps an rcu_free_nolock()'d object: it must stay
 * intact until the reader's next quiescent state. */
static struct obj *shared;   /* RCU-published: rcu_assign/dereference */
static atomic_bool reader_ok = true;
static void *reader(void *arg)
{
	(void)arg;
	rcu_register_thread();
	while (!atomic_load(&stop)) {
		struct obj *o = rcu_dereference(shared);
		for (int k = 0; o && k < 50; k++)
			if (!intact(o))
				atomic_store(&reader_ok, false);
		rcu_quiescent_state();
	}
	rcu_unregister_thread();
	return NULL;
}

static void reader_grace_check(double seconds)
{
	struct sigaction sa = { 0 };
	(void)sa;
	pthread_t r;
	pthread_create(&r, NULL, reader, NULL);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned long n = 0;
	for (;;) {
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) * 1e-9 > seconds)
			break;
		struct obj *o = malloc(sizeof(struct obj) + 32);
		fill(o, 32);
		struct obj *old = shared;
		rcu_assign_pointer(shared, o);
		if (old) {
			/* As a handler would: the nolock variant from normal
			 * context is allowed too. */
			rcu_free_nolock(old, rp);
			n++;
		}
	}
	atomic_store(&stop, true);
	pthread_join(r, NULL);
	struct obj *last = shared;
	rcu_assign_pointer(shared, NULL);
	rcu_free(last, rp);
	atomic_store(&stop, false);
	CHECKF(atomic_load(&reader_ok), "a reader saw an rcu_free_nolock()'d object change "
	       "before its grace period ended");
	printf("test_signal_storm: %lu objects rcu_free_nolock()'d under a reader\n", n);
}

int main(void)
{
	double seconds = getenv("SHEAF_STORM_SECONDS") ? atof(getenv("SHEAF_STORM_SECONDS")) : 2.0;
	alarm((unsigned int)(seconds * 10 + 60));   /* a deadlock fails, not hangs */

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);

	pthread_barrier_init(&start_bar, NULL, WORKERS + 1);
	pthread_barrier_init(&end_bar, NULL, WORKERS + 1);
	pthread_barrier_init(&done_bar, NULL, WORKERS + 1);
	for (int i = 0; i < WORKERS; i++) {
		workers[i].seed = 1234u + (unsigned int)i;
		REQUIRE(pthread_create(&workers[i].tid, NULL, work, &workers[i]) == 0);
	}
	/* Baseline with the workers alive, before any of their allocations,
	 * and with the drain thread running: creating it allocates (glibc's
	 * thread descriptor), and only a deferred free starts it (a barrier
	 * with nothing ever deferred returns at once). */
	struct obj *first = malloc(sizeof(*first));
	REQUIRE(first);
	rcu_free(first, rp);
	rcu_free_barrier();
	struct sheaf_stats s0;
	sheaf_stats_get(&s0);
	pthread_barrier_wait(&start_bar);

	for (int i = 0; i < WORKERS; i++) {
		struct sigevent sev;
		memset(&sev, 0, sizeof(sev));
		sev.sigev_notify = SIGEV_THREAD_ID;
		sev.sigev_signo = SIGUSR1;
		sev._sigev_un._tid = workers[i].ktid;
		REQUIRE(timer_create(CLOCK_MONOTONIC, &sev, &workers[i].timer) == 0);
		struct itimerspec its = { { 0, 100000 }, { 0, 100000 } };
		REQUIRE(timer_settime(workers[i].timer, 0, &its, NULL) == 0);
	}
	struct timespec ts = { (time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9) };
	nanosleep(&ts, NULL);
	for (int i = 0; i < WORKERS; i++)
		timer_delete(workers[i].timer);
	atomic_store(&stop, true);
	pthread_barrier_wait(&end_bar);
	pthread_barrier_wait(&done_bar);   /* workers freed everything */

	REQUIRE(rcu_free_barrier() == 0);
	struct sheaf_stats s1;
	sheaf_stats_get(&s1);
	CHECKF(live(&s1) == live(&s0), "live objects %" PRId64 " before the storm, %" PRId64
	       " after (rcu pending %" PRIu64 ")", live(&s0), live(&s1), s1.rcu_pending);
	CHECKF(s1.rcu_pending == 0, "%" PRIu64 " rcu objects still pending after the barrier",
	       s1.rcu_pending);
	pthread_barrier_wait(&done_bar);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(workers[i].tid, NULL);

	unsigned long sig = 0, ha = 0, hf = 0, hr = 0, hm = 0, hfail = 0, ops = 0;
	int corrupt = 0;
	for (int i = 0; i < WORKERS; i++) {
		sig += workers[i].signals;
		ha += workers[i].h_alloc;
		hfail += workers[i].h_alloc_fail;
		hf += workers[i].h_free;
		hr += workers[i].h_rcu;
		hm += workers[i].h_mail;
		ops += workers[i].ops;
		corrupt += workers[i].corrupt;
	}
	printf("test_signal_storm: %.1f s, %lu worker ops, %lu signals (%.1f kHz per thread); handlers: "
	       "%lu sheaf_malloc_nolock (%lu returned NULL), %lu sheaf_free_nolock, %lu rcu_free_nolock, "
	       "%lu mailbox frees\n", seconds, ops, sig, (double)sig / seconds / WORKERS / 1000.0, ha,
	       hfail, hf, hr, hm);
	CHECKF(corrupt == 0, "%d corrupted blocks", corrupt);
	CHECKF(sig > 0, "no signal was delivered");
	CHECKF(ha > 0, "sheaf_malloc_nolock never succeeded in %lu signals", sig);

	atomic_store(&stop, false);
	reader_grace_check(seconds / 2);
	return check_done("test_signal_storm");
}
