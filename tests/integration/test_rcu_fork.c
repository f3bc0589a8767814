/*
 * test_rcu_fork.c - rcu_free() and its barriers after fork() without exec
 * (api/sheaf/rcu.h, last paragraph; DESIGN.md "fork without exec").
 *
 * A fork child inherits liburcu's registry of reader threads, which do not
 * exist in the child.  What it proves:
 *   (a) readers OFFLINE at fork: the parent's registered reader threads go
 *       offline (rcu_thread_offline()) before the fork and online again
 *       after it.  Grace periods can end in the child: it can malloc and
 *       free, rcu_free() small and large objects, and rcu_free_barrier()
 *       returns 0 with the objects freed (rcu_objects_freed grows by their
 *       number, rcu_pending is 0).  The parent's drain thread is started
 *       before the readers, so that the child's new drain thread gets a
 *       reader's recycled stack and TLS from glibc: the child must survive
 *       that too (the reader's liburcu registry node lives in that TLS).
 *   (b) a reader ONLINE at fork: a registered thread is online and reports
 *       no quiescent state during the fork window, so no grace period can
 *       end in the child.  There malloc/free keep working, rcu_free()
 *       returns without blocking, rcu_free_barrier() returns -1 with errno
 *       ETIMEDOUT after about rcu_fork_barrier_ms (300 ms here: this test
 *       re-executes itself with SHEAF_OPTIONS=...:rcu_fork_barrier_ms=300),
 *       and does so again when called a second time; the objects are NOT
 *       freed (rcu_objects_freed unchanged, their canaries intact when read
 *       after the barrier); the child exits 0 through exit().  The parent's
 *       own rcu_free() and barrier still work after each fork.
 *   (d) fork while other threads rcu_free() continuously (the DESIGN.md
 *       invariant "fork() in a multi-threaded process during heavy
 *       allocation leaves a child that can allocate and free", with
 *       deferred frees): every child returns from fork(), can malloc, free
 *       and rcu_free, and its rcu_free_barrier() returns (0, or ETIMEDOUT
 *       if the parent's drain thread was inside a grace period at the fork).
 *   (e) readers UNREGISTERED at fork (liburcu's own rule for fork without
 *       exec): the child starts a thread of its own first - glibc gives it
 *       the cached stack and TLS of one of the parent's threads - and then
 *       rcu_free() + rcu_free_barrier() work as in (a).  (With readers that
 *       are only offline, such a thread would zero the liburcu registry
 *       node still linked in that TLS; that case is left out on purpose.)
 *   (c) as (a), after a registered thread of the parent rcu_free()'d while
 *       online (in a --enable-tiny build that is a call_rcu(), whose worker
 *       thread does not exist in the child): the child's barrier still
 *       returns 0 and frees its objects.  Run last, because it changes
 *       liburcu's state for every later fork.
 * A child that hangs - inside fork() itself or later - is killed by the
 * parent after a generous limit and reported; children also arm alarm().
 * No timing assertion besides that: the barrier's give-up time is checked
 * only to be at least rcu_fork_barrier_ms and well below the 2 s default.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "sheaf.h"
#include "sheaf/rcu.h"
#include "check.h"

#define REEXEC_ENV "SHEAF_RCU_FORK_TEST_REEXEC"
#define FORK_BARRIER_MS 300
#define NREADERS 2
#define NFORKS_BUSY 10
#define CANARY 0x5eafc0ffee000000ull

struct obj {
	uint64_t canary;            /* offset 0 */
	struct rcu_ptr rp;
	uint64_t data[4];
};

struct big {                    /* a large allocation, field far inside */
	uint64_t canary;
	char pad[40000 - 8];
	struct rcu_head rh;
	char pad2[4000];
};

static bool tiny;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct sheaf_stats stats(void)
{
	struct sheaf_stats s;
	sheaf_stats_get(&s);
	return s;
}

static struct obj *obj_new(uint64_t tag)
{
	struct obj *o = malloc(sizeof(*o));
	REQUIRE(o);
	o->canary = CANARY | tag;
	return o;
}

/* ---------------------------------------------------- parent's readers */
static struct obj *shared;              /* RCU-protected */
static atomic_bool stop_readers;
static atomic_int want_offline;         /* readers: go offline and wait */
static atomic_int offline_count;
static atomic_ulong reader_bad;

static void *reader_main(void *arg)
{
	(void)arg;
	rcu_register_thread();
	while (!atomic_load(&stop_readers)) {
		if (atomic_load(&want_offline)) {
			rcu_thread_offline();
			atomic_fetch_add(&offline_count, 1);
			while (atomic_load(&want_offline) && !atomic_load(&stop_readers))
				sleep_ms(1);
			atomic_fetch_sub(&offline_count, 1);
			rcu_thread_online();
			continue;
		}
		struct obj *o = rcu_dereference(shared);
		if (o && (__atomic_load_n(&o->canary, __ATOMIC_RELAXED) & ~0xffffffull) != CANARY)
			atomic_fetch_add(&reader_bad, 1);
		rcu_quiescent_state();
	}
	rcu_unregister_thread();
	return NULL;
}

/* A registered thread that, on request, stays online and reports no
 * quiescent state until released (the "online at fork" reader). */
static atomic_int hold_req, holding;
static atomic_bool stop_holder;

static void *holder_main(void *arg)
{
	(void)arg;
	rcu_register_thread();
	while (!atomic_load(&stop_holder)) {
		if (atomic_load(&want_offline)) {   /* as the readers, for (a) */
			rcu_thread_offline();
			atomic_fetch_add(&offline_count, 1);
			while (atomic_load(&want_offline) && !atomic_load(&stop_holder))
				sleep_ms(1);
			atomic_fetch_sub(&offline_count, 1);
			rcu_thread_online();
			continue;
		}
		if (atomic_load(&hold_req)) {
			atomic_store(&holding, 1);
			while (atomic_load(&hold_req))
				__asm__ volatile("pause" ::: "memory");   /* online, no QS */
			atomic_store(&holding, 0);
		}
		rcu_quiescent_state();
		rcu_thread_offline();
		sleep_ms(1);
		rcu_thread_online();
	}
	rcu_unregister_thread();
	return NULL;
}

/* The parent's own writer activity: replace `shared` a few times. */
static unsigned long replace_shared(int n)
{
	for (int i = 0; i < n; i++) {
		struct obj *o = obj_new((uint64_t)i);
		struct obj *old = shared;
		rcu_assign_pointer(shared, o);
		if (old)
			rcu_free(old, rp);
	}
	return (unsigned long)n;
}

/* The parent's rcu_free() and barrier after a fork. */
static void parent_still_works(const char *when)
{
	struct sheaf_stats s0 = stats();
	unsigned long n = replace_shared(20);
	int r = rcu_free_barrier();
	struct sheaf_stats s1 = stats();
	CHECKF(r == 0, "parent after %s: rcu_free_barrier() returned %d (errno %d)", when, r, errno);
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed >= n,
	       "parent after %s: rcu_objects_freed +%llu for %lu rcu_free()s", when,
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed), n);
}

/* ----------------------------------------------------- child helpers */
/* Child side: the check counters start from zero. */
static void child_begin(unsigned int alarm_s)
{
	alarm(alarm_s);
	check_failures = 0;
	check_count = 0;
}

static void child_end_exit(const char *name)
{
	fflush(NULL);
	exit(check_done(name));
}

/* malloc/free of several sizes, contents checked. */
static bool malloc_works(void)
{
	static const size_t sizes[] = { 8, 24, 64, 200, 1000, 5000, 33000, 100000, 1u << 20 };
	void *p[9];
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 9; i++) {
			p[i] = malloc(sizes[i]);
			if (!p[i])
				return false;
			memset(p[i], i + round, sizes[i]);
		}
		for (int i = 0; i < 9; i++) {
			unsigned char *b = p[i];
			if (b[0] != (unsigned char)(i + round) || b[sizes[i] - 1] != (unsigned char)(i + round))
				return false;
			free(p[i]);
		}
	}
	return true;
}

/*
 * Waits for a child for at most `limit_ms`; a child still running then is
 * killed (it hung) and reported.  Returns true when it exited 0.
 */
static bool wait_child(pid_t pid, long limit_ms, const char *what)
{
	int st;
	long t0 = now_ms();
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		REQUIRE(r == 0 || errno == EINTR);
		if (now_ms() - t0 > limit_ms) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			CHECKF(0, "%s: the child hung (killed after %ld ms)", what, limit_ms);
			return false;
		}
		sleep_ms(5);
	}
	if (WIFSIGNALED(st)) {
		CHECKF(0, "%s: the child died of signal %d%s", what, WTERMSIG(st),
		       WTERMSIG(st) == SIGALRM ? " (alarm: it hung)" : "");
		return false;
	}
	CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the child exited with status %d", what,
	       WEXITSTATUS(st));
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---------------------------------------------------- (a) and (c) */
static void *child_thread(void *arg)
{
	(void)arg;
	return malloc_works() ? NULL : (void *)1;
}

/* Child: grace periods can end here; rcu_free() + barrier free objects.
 * With `spawn`, a thread of the child's own runs first. */
static void child_can_free(const char *name, bool spawn)
{
	child_begin(8);
	CHECKF(malloc_works(), "%s: malloc/free failed in the child", name);
	if (spawn) {
		pthread_t t;
		void *ret = (void *)1;
		CHECK(pthread_create(&t, NULL, child_thread, NULL) == 0 &&
		      pthread_join(t, &ret) == 0 && ret == NULL);
	}
	struct sheaf_stats s0 = stats();
	for (int i = 0; i < 5; i++) {
		struct obj *o = obj_new((uint64_t)i);
		rcu_free(o, rp);
	}
	for (int i = 0; i < 2; i++) {
		struct big *b = malloc(sizeof(*b));
		REQUIRE(b);
		b->canary = CANARY;
		rcu_free(b, rh);
	}
	int r = rcu_free_barrier();
	int err = errno;
	struct sheaf_stats s1 = stats();
	CHECKF(r == 0, "%s: rcu_free_barrier() in the child returned %d (errno %d)", name, r, err);
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed >= 7,
	       "%s: rcu_objects_freed +%llu in the child, expected 7", name,
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed));
	CHECKF(s1.rcu_pending == 0, "%s: rcu_pending %llu in the child after the barrier", name,
	       (unsigned long long)s1.rcu_pending);
	CHECKF(malloc_works(), "%s: malloc/free failed in the child after the barrier", name);
	child_end_exit(name);
}

/* Parent: readers offline, fork, readers online again. */
static void fork_with_readers_offline(const char *name)
{
	/* The parent's drain thread must not be inside a grace period at
	 * the fork (liburcu's grace-period lock would stay taken in the
	 * child): nothing pending, the barrier has returned. */
	CHECK(rcu_free_barrier() == 0);
	atomic_store(&want_offline, 1);
	while (atomic_load(&offline_count) != NREADERS + 1)   /* and the holder */
		sleep_ms(1);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		child_can_free(name, false);
	atomic_store(&want_offline, 0);
	bool ok = wait_child(pid, 10000, name);
	if (ok)
		printf("%s: the child freed its rcu_free()'d objects\n", name);
	parent_still_works(name);
}

/* -------------------------------------------------------------- (b) */
static void child_cannot_free(void)
{
	const char *name = "(b) reader online at fork";
	child_begin(8);
	CHECKF(malloc_works(), "%s: malloc/free failed in the child", name);
	struct sheaf_stats s0 = stats();
	struct obj *o[4];
	for (int i = 0; i < 4; i++) {
		o[i] = obj_new(0xb0 + (uint64_t)i);
		rcu_free(o[i], rp);   /* returns: a hang here is the alarm */
	}
	struct big *b = malloc(sizeof(*b));
	REQUIRE(b);
	b->canary = CANARY | 0xb1;
	rcu_free(b, rh);

	long t0 = now_ms();
	errno = 0;
	int r = rcu_free_barrier();
	int err = errno;
	long took = now_ms() - t0;
	CHECKF(r == -1 && err == ETIMEDOUT,
	       "%s: rcu_free_barrier() returned %d, errno %d (%s), expected -1 ETIMEDOUT", name, r,
	       err, strerror(err));
	CHECKF(took >= FORK_BARRIER_MS - 10 && took < 1800,
	       "%s: the barrier gave up after %ld ms, expected about rcu_fork_barrier_ms=%d", name,
	       took, FORK_BARRIER_MS);
	printf("%s: rcu_free_barrier() gave up after %ld ms with ETIMEDOUT\n", name, took);

	struct sheaf_stats s1 = stats();
	CHECKF(s1.rcu_objects_freed == s0.rcu_objects_freed,
	       "%s: %llu objects freed although no grace period can end", name,
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed));
	/* Not freed, so still intact (they were never unpublished from a
	 * reader's point of view: reading them is what a late reader does). */
	for (int i = 0; i < 4; i++)
		CHECKF(__atomic_load_n(&o[i]->canary, __ATOMIC_RELAXED) == (CANARY | (0xb0 + (uint64_t)i)),
		       "%s: object %d changed after the barrier: freed early", name, i);
	CHECKF(__atomic_load_n(&b->canary, __ATOMIC_RELAXED) == (CANARY | 0xb1),
	       "%s: the large object changed after the barrier: freed early", name);

	/* Again: it gives up again, and does not hang. */
	errno = 0;
	r = rcu_free_barrier();
	err = errno;
	CHECKF(r == -1 && err == ETIMEDOUT, "%s: second barrier returned %d, errno %d", name, r, err);
	CHECKF(malloc_works(), "%s: malloc/free failed in the child after the barriers", name);
	child_end_exit(name);   /* exit(), not _exit(): the destructors must not hang */
}

static void fork_with_reader_online(void)
{
	const char *name = "(b) reader online at fork";
	atomic_store(&hold_req, 1);
	while (!atomic_load(&holding))
		sleep_ms(1);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		child_cannot_free();
	atomic_store(&hold_req, 0);
	if (wait_child(pid, 10000, name))
		printf("%s: the child exited 0\n", name);
	parent_still_works(name);
}

/* -------------------------------------------------------------- (d) */
static atomic_bool stop_writers;
static struct sheaf_cache *wcache;

struct cobj {
	uint64_t canary;
	struct rcu_head rh;
	uint64_t data[3];
};

static void *busy_writer(void *arg)
{
	int id = (int)(uintptr_t)arg;
	unsigned long i = 0;
	while (!atomic_load_explicit(&stop_writers, memory_order_relaxed)) {
		i++;
		if (id == 0) {
			struct obj *o = obj_new(i & 0xff);
			rcu_free(o, rp);
		} else {
			struct cobj *c = sheaf_cache_alloc(wcache);
			REQUIRE(c);
			c->canary = CANARY;
			rcu_free(c, rh);
		}
		if (i % 512 == 0) {
			struct big *b = malloc(sizeof(*b));
			REQUIRE(b);
			rcu_free(b, rh);
		}
	}
	return NULL;
}

static void child_busy(void)
{
	const char *name = "(d) fork during rcu_free()";
	child_begin(8);
	CHECKF(malloc_works(), "%s: malloc/free failed in the child", name);
	for (int i = 0; i < 10; i++) {
		struct obj *o = obj_new((uint64_t)i);
		rcu_free(o, rp);
		struct cobj *c = sheaf_cache_alloc(wcache);
		REQUIRE(c);
		rcu_free(c, rh);
	}
	errno = 0;
	int r = rcu_free_barrier();
	int err = errno;
	CHECKF(r == 0 || (r == -1 && err == ETIMEDOUT),
	       "%s: rcu_free_barrier() returned %d, errno %d", name, r, err);
	CHECKF(malloc_works(), "%s: malloc/free failed in the child after the barrier", name);
	fflush(NULL);
	_exit(check_failures ? 1 : 0);   /* quick: the drain thread may be stuck */
}

static void fork_while_busy(void)
{
	const char *name = "(d) fork during rcu_free()";
	wcache = sheaf_cache_create("rcu_fork_busy", sizeof(struct cobj), 0, 0, NULL);
	REQUIRE(wcache);
	pthread_t w[2];
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&w[i], NULL, busy_writer, (void *)(uintptr_t)i) == 0);
	int ok = 0, n = 0;
	for (; n < NFORKS_BUSY; n++) {
		sleep_ms(10);
		fflush(NULL);
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0)
			child_busy();
		if (!wait_child(pid, 5000, name)) {
			n++;
			break;   /* one hang is enough to report */
		}
		ok++;
	}
	atomic_store(&stop_writers, true);
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_join(w[i], NULL) == 0);
	printf("%s: %d of %d children came back from fork() and worked\n", name, ok, n);
	CHECK(rcu_free_barrier() == 0);
	CHECK(sheaf_cache_destroy(wcache) == 0);
}

/* -------------------------------------------------------------- (e) */
static atomic_int want_unreg, unreg_count;
static atomic_bool stop_e;

static void *reader_e(void *arg)
{
	(void)arg;
	rcu_register_thread();
	while (!atomic_load(&stop_e)) {
		if (atomic_load(&want_unreg)) {
			rcu_unregister_thread();
			atomic_fetch_add(&unreg_count, 1);
			while (atomic_load(&want_unreg))
				sleep_ms(1);
			atomic_fetch_sub(&unreg_count, 1);
			rcu_register_thread();
			continue;
		}
		struct obj *o = rcu_dereference(shared);
		if (o && (__atomic_load_n(&o->canary, __ATOMIC_RELAXED) & ~0xffffffull) != CANARY)
			atomic_fetch_add(&reader_bad, 1);
		rcu_quiescent_state();
	}
	rcu_unregister_thread();
	return NULL;
}

static void fork_with_readers_unregistered(void)
{
	const char *name = "(e) readers unregistered at fork, child starts a thread";
	pthread_t r[NREADERS];
	for (int i = 0; i < NREADERS; i++)
		REQUIRE(pthread_create(&r[i], NULL, reader_e, NULL) == 0);
	replace_shared(20);
	CHECK(rcu_free_barrier() == 0);
	atomic_store(&want_unreg, 1);
	while (atomic_load(&unreg_count) != NREADERS)
		sleep_ms(1);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		child_can_free(name, true);
	atomic_store(&want_unreg, 0);
	if (wait_child(pid, 10000, name))
		printf("%s: the child freed its rcu_free()'d objects\n", name);
	parent_still_works(name);
	atomic_store(&stop_e, true);
	for (int i = 0; i < NREADERS; i++)
		REQUIRE(pthread_join(r[i], NULL) == 0);
}

/* -------------------------------------------------------------- (c) */
static void *online_rcu_free_thread(void *arg)
{
	(void)arg;
	rcu_register_thread();
	for (int i = 0; i < 3; i++) {
		struct obj *o = obj_new((uint64_t)i);
		rcu_free(o, rp);   /* online: a call_rcu() in a tiny build */
	}
	rcu_thread_offline();
	rcu_unregister_thread();
	return NULL;
}

/* ------------------------------------------------------------------ */
static void reexec_with_options(char **argv)
{
	char buf[1024];
	const char *old = getenv("SHEAF_OPTIONS");
	if (old && *old)
		snprintf(buf, sizeof(buf), "%s:rcu_fork_barrier_ms=%d", old, FORK_BARRIER_MS);
	else
		snprintf(buf, sizeof(buf), "rcu_fork_barrier_ms=%d", FORK_BARRIER_MS);
	setenv("SHEAF_OPTIONS", buf, 1);
	setenv(REEXEC_ENV, "1", 1);
	execv("/proc/self/exe", argv);
	execv(argv[0], argv);
	perror("re-exec");
	exit(1);
}

int main(int argc, char **argv)
{
	(void)argc;
	/* SHEAF_OPTIONS is read at the first allocation: set it for a fresh
	 * image of this program. */
	if (!getenv(REEXEC_ENV))
		reexec_with_options(argv);
	alarm(180);
	tiny = sheaf_build_flags() & SHEAF_BUILD_TINY;
	printf("test_rcu_fork (%s build, SHEAF_OPTIONS=%s)\n", tiny ? "tiny" : "normal",
	       getenv("SHEAF_OPTIONS"));
	fflush(stdout);

	/* Deferred frees before the readers exist, as a program that frees
	 * during its set-up does: the drain thread is older than the readers.
	 * (That order matters in the child: glibc hands the child's first new
	 * thread the cached stack, and static TLS, of a parent thread, here a
	 * reader whose liburcu registry node is still linked.) */
	replace_shared(10);
	CHECK(rcu_free_barrier() == 0);

	pthread_t readers[NREADERS], holder;
	for (int i = 0; i < NREADERS; i++)
		REQUIRE(pthread_create(&readers[i], NULL, reader_main, NULL) == 0);
	REQUIRE(pthread_create(&holder, NULL, holder_main, NULL) == 0);
	replace_shared(50);
	CHECK(rcu_free_barrier() == 0);

	fork_with_readers_offline("(a) readers offline at fork");
	fork_with_reader_online();
	fork_with_readers_offline("(a) readers offline at fork, again after (b)");

	atomic_store(&stop_holder, true);
	atomic_store(&stop_readers, true);
	REQUIRE(pthread_join(holder, NULL) == 0);
	for (int i = 0; i < NREADERS; i++)
		REQUIRE(pthread_join(readers[i], NULL) == 0);
	CHECKF(atomic_load(&reader_bad) == 0, "the parent's readers saw %lu bad canaries",
	       atomic_load(&reader_bad));

	fork_while_busy();
	fork_with_readers_unregistered();

	/* (c): a registered thread rcu_free()'d while online, then a fork. */
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, online_rcu_free_thread, NULL) == 0);
	REQUIRE(pthread_join(t, NULL) == 0);
	CHECK(rcu_free_barrier() == 0);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		child_can_free("(c) after rcu_free() from an online registered thread", false);
	if (wait_child(pid, 10000, "(c) after rcu_free() from an online registered thread"))
		printf("(c): the child freed its rcu_free()'d objects\n");

	struct obj *last = shared;
	rcu_assign_pointer(shared, NULL);
	rcu_free(last, rp);
	CHECK(rcu_free_barrier() == 0);
	return check_done("test_rcu_fork");
}
