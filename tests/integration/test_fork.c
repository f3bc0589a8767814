/*
 * test_fork.c - fork() in a multi-threaded process during heavy allocation.
 *
 * What it proves: the DESIGN.md invariant "fork() in a multi-threaded
 * process during heavy allocation leaves a child that can allocate and
 * free".  Four threads allocate, realloc and free continuously while the
 * main thread forks 20 times at arbitrary moments (and one worker forks
 * too, from a thread that is itself in the middle of allocating).  Any lock
 * that a worker held at the instant of fork - a barn lock, a slab list
 * lock, the large-allocation cache, the page source, the thread registry -
 * is held forever in the child unless the allocator's atfork handlers take
 * and release (or reinitialise) it; a child then deadlocks on its first
 * allocation of that kind.  Each child therefore:
 *   - frees blocks the parent's main thread allocated before the fork,
 *   - allocates and frees many sizes, small to > 64 KiB (large mappings),
 *     with calloc, realloc growing and shrinking, posix_memalign,
 *   - starts a thread of its own that does the same, and joins it,
 *   - verifies every block's contents, and exits 0.
 * Every fourth child also forks a grandchild (a fork from a process that
 * was itself forked, after it ran a thread) which does the same work.
 *
 * No fork happens before every worker is running.  A thread that is
 * starting (or exiting) allocates inside libc, and under AddressSanitizer
 * that is ASan's own allocator, whose locks clang 14's runtime does not
 * take around fork(): a fork at that instant leaves the child with ASan's
 * lock held, and the child's own thread start hangs on it - in ASan, not
 * in sheaf (seen in CI's check-sanitize: the stack ends in
 * SizeClassAllocator64::GetFromAllocator).  Once running, the workers only
 * call sheaf, whose locks are what this test is about.
 *
 * A deadlock must fail the test, not hang it: every child and grandchild
 * arms alarm() first thing, so a stuck one dies of SIGALRM and the parent
 * reports it; the parent arms its own alarm too.  No timing assertion:
 * the alarm limits are an order of magnitude above the normal run time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sheaf.h"
#include "check.h"
#include "pattern.h"   /* rnd() */

#define NWORKERS      4
#define NFORKS        20
#define CHILD_ALARM   60      /* seconds; a normal child needs well under 1 */
#define PARENT_ALARM  240
#define WSLOTS        256     /* per worker */

/* Child exit codes (distinct so the parent can say what went wrong). */
enum {
	CHILD_OK = 0,
	CHILD_BAD_CONTENT = 10,   /* a block lost its pattern            */
	CHILD_NOMEM = 11,         /* an allocation returned NULL          */
	CHILD_NOT_ZERO = 12,      /* calloc memory not zeroed             */
	CHILD_THREAD = 13,        /* pthread_create/join failed           */
	CHILD_NOT_SHEAF = 14,     /* allocations not counted by sheaf     */
	CHILD_GRANDCHILD = 15,    /* the grandchild failed                */
	CHILD_FORK = 16,          /* fork() itself failed                 */
	CHILD_INHERITED = 17,     /* a block inherited from the parent was damaged */
};

static size_t pick_size(uint64_t *s)
{
	unsigned r = (unsigned)(rnd(s) % 100);
	if (r < 60)
		return 1 + rnd(s) % 256;
	if (r < 85)
		return 257 + rnd(s) % 4096;
	if (r < 95)
		return 4353 + rnd(s) % (60u << 10);
	return (64u << 10) + 1 + rnd(s) % (960u << 10);  /* large: > 64 KiB, < 1 MiB */
}

/* Byte i of a block with seed t. */
static inline uint8_t pat(uint32_t t, size_t i)
{
	return (uint8_t)(t + i * 131u + (i >> 9));
}

/* The bytes that carry the pattern: all of a small block; of a large one
 * the first and last 256 bytes and 32 bytes of every 4 KiB page - enough
 * to see a block handed out twice or a page lost, without spending the
 * test's time on memcmp-like loops over megabytes. */
static inline size_t next_i(size_t i, size_t n)
{
	i++;
	if (i >= 256 && i + 256 < n && (i & 4095) >= 32) {
		size_t nx = (i | 4095) + 1;
		i = nx < n - 256 ? nx : n - 256;
	}
	return i;
}

static void fill(uint8_t *p, size_t n, uint32_t t)
{
	for (size_t i = 0; i < n; i = next_i(i, n))
		p[i] = pat(t, i);
}

/* Checks the pattern of a block of n bytes, only below `limit` (the part
 * a realloc to a smaller size keeps). */
static bool ok_upto(const uint8_t *p, size_t n, uint32_t t, size_t limit)
{
	for (size_t i = 0; i < n && i < limit; i = next_i(i, n))
		if (p[i] != pat(t, i))
			return false;
	return true;
}

static bool ok(const uint8_t *p, size_t n, uint32_t t)
{
	return ok_upto(p, n, t, n);
}

struct blk {
	uint8_t *p;
	size_t n;
	uint32_t t;
};

/*
 * The child's workload: `rounds` random steps over 64 blocks; returns
 * CHILD_OK or an error code.  Used by children, grandchildren and the
 * threads they start.
 */
static int churn(uint64_t seed, int rounds)
{
	struct blk b[64] = { { 0 } };
	uint64_t s = seed | 1;
	int rc = CHILD_OK;
	uint32_t tag = (uint32_t)seed;

	for (int r = 0; r < rounds && rc == CHILD_OK; r++) {
		struct blk *x = &b[rnd(&s) % 64];
		unsigned what = (unsigned)(rnd(&s) % 8);
		if (x->p && !ok(x->p, x->n, x->t)) {
			rc = CHILD_BAD_CONTENT;
			break;
		}
		if (x->p && what < 3) {
			free(x->p);
			x->p = NULL;
		} else if (x->p && what < 6) {
			/* realloc, growing or shrinking; the prefix must survive */
			size_t n = pick_size(&s);
			uint8_t *q = realloc(x->p, n);
			if (!q) {
				rc = CHILD_NOMEM;
				break;
			}
			if (!ok_upto(q, x->n, x->t, n))
				rc = CHILD_BAD_CONTENT;
			x->p = q;
			x->n = n;
			x->t = ++tag;
			fill(q, n, x->t);
		} else if (!x->p) {
			size_t n = pick_size(&s);
			uint8_t *q;
			if (what == 6) {
				q = calloc(1, n);
				if (q)
					for (size_t i = 0; i < n; i = next_i(i, n))
						if (q[i]) {
							rc = CHILD_NOT_ZERO;
							break;
						}
			} else if (what == 7) {
				void *m = NULL;
				q = posix_memalign(&m, 64, n) == 0 ? m : NULL;
				if (q && ((uintptr_t)q & 63))
					rc = CHILD_BAD_CONTENT;
			} else {
				q = malloc(n);
			}
			if (!q) {
				rc = CHILD_NOMEM;
				break;
			}
			x->p = q;
			x->n = n;
			x->t = ++tag;
			fill(q, n, x->t);
		}
	}
	for (int i = 0; i < 64; i++) {
		if (b[i].p && rc == CHILD_OK && !ok(b[i].p, b[i].n, b[i].t))
			rc = CHILD_BAD_CONTENT;
		free(b[i].p);
	}
	return rc;
}

static void *churn_thread(void *arg)
{
	return (void *)(intptr_t)churn((uint64_t)(uintptr_t)arg, 3000);
}

/* Blocks the main thread allocates before forking; the child checks and
 * frees the copies it inherits (they are sheaf's blocks, in sheaf's slabs
 * and large mappings, as the child sees them). */
#define NINHERIT 32
static struct blk inherited[NINHERIT];

static int child_body(uint64_t seed, bool may_fork)
{
	struct sheaf_stats s0, s1;
	sheaf_stats_get(&s0);

	for (int i = 0; i < NINHERIT; i++) {
		if (!ok(inherited[i].p, inherited[i].n, inherited[i].t))
			return CHILD_INHERITED;
		free(inherited[i].p);
		inherited[i].p = NULL;
	}

	int rc = churn(seed, 4000);
	if (rc)
		return rc;

	/* A thread of the child's own: its first allocation creates per-thread
	 * state in a process whose registry was inherited from a parent with
	 * five threads. */
	pthread_t t;
	void *tr;
	if (pthread_create(&t, NULL, churn_thread, (void *)(uintptr_t)(seed * 3 + 1)) != 0)
		return CHILD_THREAD;
	rc = churn(seed * 5 + 7, 2000);   /* concurrently with it */
	if (pthread_join(t, &tr) != 0)
		return CHILD_THREAD;
	if (rc)
		return rc;
	if ((intptr_t)tr != CHILD_OK)
		return (int)(intptr_t)tr;

	if (may_fork) {
		fflush(NULL);
		pid_t g = fork();
		if (g < 0)
			return CHILD_FORK;
		if (g == 0) {
			alarm(CHILD_ALARM);
			/* nothing inherited left to free: child_body freed it */
			int grc = churn(seed * 11 + 5, 4000);
			if (grc == CHILD_OK) {
				pthread_t gt;
				void *gr;
				if (pthread_create(&gt, NULL, churn_thread, (void *)(uintptr_t)(seed + 99)) != 0 ||
				    pthread_join(gt, &gr) != 0)
					grc = CHILD_THREAD;
				else
					grc = (int)(intptr_t)gr;
			}
			exit(grc);
		}
		int st;
		while (waitpid(g, &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			if (WIFSIGNALED(st))
				fprintf(stderr, "test_fork: grandchild %d killed by signal %d%s\n", (int)g,
					WTERMSIG(st), WTERMSIG(st) == SIGALRM ? " (deadlock: alarm)" : "");
			else
				fprintf(stderr, "test_fork: grandchild %d exited with %d\n", (int)g,
					WEXITSTATUS(st));
			return CHILD_GRANDCHILD;
		}
	}

	sheaf_stats_get(&s1);
	if (s1.allocs <= s0.allocs)
		return CHILD_NOT_SHEAF;
	return CHILD_OK;
}

/* ------------------------------------------------------ parent's workers -- */
static atomic_bool stop;
static atomic_long worker_errors;
static atomic_int forks_from_worker;
static atomic_int workers_started;    /* fork only once all are running */
static pid_t worker_child = -1;       /* written by worker 0 before it exits */

struct worker {
	pthread_t tid;
	int id;
	unsigned long rounds;
};

static void *worker(void *vp)
{
	struct worker *w = vp;
	struct blk b[WSLOTS] = { { 0 } };
	uint64_t s = 0xC0FFEEull * (uint64_t)(w->id + 1);
	uint32_t tag = (uint32_t)w->id << 24;

	atomic_fetch_add(&workers_started, 1);
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		struct blk *x = &b[rnd(&s) % WSLOTS];
		if (x->p) {
			/* Check a sample of the bytes: the workers' job is to keep
			 * sheaf busy (and its locks taken) at the instant of fork. */
			if (x->p[0] != pat(x->t, 0) || x->p[x->n - 1] != pat(x->t, x->n - 1))
				atomic_fetch_add(&worker_errors, 1);
			if (rnd(&s) & 1) {
				free(x->p);
				x->p = NULL;
			} else {
				size_t n = pick_size(&s);
				uint8_t *q = realloc(x->p, n);
				if (!q) {
					atomic_fetch_add(&worker_errors, 1);
					continue;
				}
				x->p = q;
				x->n = n;
				x->t = ++tag;
				q[0] = pat(x->t, 0);
				q[n - 1] = pat(x->t, n - 1);
			}
		} else {
			size_t n = pick_size(&s);
			uint8_t *q = malloc(n);
			if (!q) {
				atomic_fetch_add(&worker_errors, 1);
				continue;
			}
			x->p = q;
			x->n = n;
			x->t = ++tag;
			q[0] = pat(x->t, 0);
			q[n - 1] = pat(x->t, n - 1);
		}
		w->rounds++;
		/* Worker 0 forks once, from inside its allocation loop. */
		if (w->id == 0 && w->rounds >= 20000 && atomic_load(&forks_from_worker) == 0 &&
		    atomic_load(&workers_started) == NWORKERS) {
			atomic_store(&forks_from_worker, 1);
			pid_t p = fork();
			if (p == 0) {
				alarm(CHILD_ALARM);
				/* Only this thread exists here; its own blocks are intact. */
				int rc = CHILD_OK;
				for (int i = 0; i < WSLOTS; i++) {
					if (b[i].p && (b[i].p[0] != pat(b[i].t, 0) ||
						       b[i].p[b[i].n - 1] != pat(b[i].t, b[i].n - 1)))
						rc = CHILD_INHERITED;
					free(b[i].p);
				}
				if (rc == CHILD_OK)
					rc = churn(0xABCDEF, 4000);
				if (rc == CHILD_OK) {
					pthread_t t;
					void *tr;
					if (pthread_create(&t, NULL, churn_thread, (void *)(uintptr_t)77) != 0 ||
					    pthread_join(t, &tr) != 0)
						rc = CHILD_THREAD;
					else
						rc = (int)(intptr_t)tr;
				}
				_exit(rc);
			}
			worker_child = p;
		}
	}
	for (int i = 0; i < WSLOTS; i++)
		free(b[i].p);
	return NULL;
}

static const char *child_error(int code)
{
	switch (code) {
	case CHILD_BAD_CONTENT: return "a block lost its contents";
	case CHILD_NOMEM: return "an allocation failed";
	case CHILD_NOT_ZERO: return "calloc memory was not zero";
	case CHILD_THREAD: return "pthread_create/join failed";
	case CHILD_NOT_SHEAF: return "sheaf did not count the child's allocations";
	case CHILD_GRANDCHILD: return "its grandchild failed";
	case CHILD_FORK: return "fork failed";
	case CHILD_INHERITED: return "a block inherited from the parent was damaged";
	default: return "unexpected exit status";
	}
}

/* Waits for pid; true if it exited 0.  Prints why not otherwise. */
static bool reap(pid_t pid, const char *what, int n)
{
	int st;
	pid_t r;
	while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		;
	if (r != pid) {
		fprintf(stderr, "test_fork: waitpid(%s %d): %s\n", what, n, strerror(errno));
		return false;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return true;
	if (WIFSIGNALED(st))
		fprintf(stderr, "test_fork: %s %d (pid %d) killed by signal %d%s\n", what, n, (int)pid,
			WTERMSIG(st),
			WTERMSIG(st) == SIGALRM ? ": no progress for " "60 s, deadlocked after fork" : "");
	else
		fprintf(stderr, "test_fork: %s %d (pid %d) exited with %d: %s\n", what, n, (int)pid,
			WEXITSTATUS(st), child_error(WEXITSTATUS(st)));
	return false;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int main(void)
{
	struct worker w[NWORKERS];
	pid_t kids[NFORKS];
	uint64_t s = 12345;

	alarm(PARENT_ALARM);
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* sheaf must be this program's malloc (linked with -lsheaf). */
	{
		struct sheaf_stats a, b;
		sheaf_stats_get(&a);
		void *p = malloc(123);
		sheaf_stats_get(&b);
		REQUIRE(p != NULL);
		REQUIRE(b.allocs > a.allocs);
		free(p);
	}

	for (int i = 0; i < NINHERIT; i++) {
		size_t n = i % 4 == 3 ? (200u << 10) + (size_t)i : 16 + (size_t)i * 37;
		inherited[i].p = malloc(n);
		REQUIRE(inherited[i].p != NULL);
		inherited[i].n = n;
		inherited[i].t = 1000u + (uint32_t)i;
		fill(inherited[i].p, n, inherited[i].t);
	}

	for (int i = 0; i < NWORKERS; i++) {
		w[i].id = i;
		w[i].rounds = 0;
		REQUIRE(pthread_create(&w[i].tid, NULL, worker, &w[i]) == 0);
	}

	while (atomic_load(&workers_started) < NWORKERS)
		sleep_ms(1);
	int failed = 0;
	for (int k = 0; k < NFORKS; k++) {
		/* Let the workers get going, and vary the moment of fork. */
		sleep_ms(2 + (long)(rnd(&s) % 15));
		fflush(NULL);
		pid_t p = fork();
		REQUIRE(p >= 0);
		if (p == 0) {
			alarm(CHILD_ALARM);
			exit(child_body(0x1000u + (uint64_t)k * 7919u, k % 4 == 1));
		}
		kids[k] = p;
		/* Reap every other child at once, so that children overlap with
		 * each other and with the parent's workers. */
		if (k % 2 == 1) {
			if (!reap(kids[k - 1], "child", k - 1))
				failed++;
			kids[k - 1] = -1;
		}
	}
	for (int k = 0; k < NFORKS; k++)
		if (kids[k] > 0 && !reap(kids[k], "child", k))
			failed++;

	atomic_store(&stop, true);
	unsigned long rounds = 0;
	for (int i = 0; i < NWORKERS; i++) {
		REQUIRE(pthread_join(w[i].tid, NULL) == 0);
		rounds += w[i].rounds;
	}
	if (worker_child > 0 && !reap(worker_child, "child of worker", 0))
		failed++;

	/* The parent goes on allocating normally after all that. */
	CHECKF(churn(4242, 4000) == CHILD_OK, "parent's own churn after the forks failed");
	for (int i = 0; i < NINHERIT; i++) {
		CHECKF(ok(inherited[i].p, inherited[i].n, inherited[i].t),
		       "parent's block %d changed (a child's free reached the parent?)", i);
		free(inherited[i].p);
	}

	printf("%d forks from the main thread, %d from a worker; workers did %lu operations\n",
	       NFORKS, atomic_load(&forks_from_worker), rounds);
	CHECKF(failed == 0, "%d of %d children failed", failed,
	       NFORKS + atomic_load(&forks_from_worker));
	CHECKF(atomic_load(&forks_from_worker) == 1, "the worker never forked (too few rounds?)");
	CHECKF(atomic_load(&worker_errors) == 0, "%ld errors in the parent's workers",
	       atomic_load(&worker_errors));
	return check_done("test_fork");
}
