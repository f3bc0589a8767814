/*
 * bench_nolock.c - what the signal-safe paths cost.
 *
 *   rcu_free (normal)        rcu_free() of 64-byte objects, per object
 *   rcu_free_nolock (normal) the nolock variant from normal context
 *   rcu_free_nolock (signal) from inside a SIGUSR1 handler, 64 objects per
 *                            signal, the cost of an empty raise() subtracted
 *   storm throughput         a malloc/free loop for 1 s without signals and
 *                            under a 10 kHz per-thread timer whose handler
 *                            does sheaf_malloc_nolock + sheaf_free_nolock
 *
 * Objects are malloc'ed before each timed loop, so only the free is timed.
 * Usage: bench_nolock [--objects N]
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sheaf.h"
#include "sheaf/rcu.h"

struct obj {
	struct rcu_ptr rp;
	char data[56];
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct obj **objs;
static size_t nobjs;
static volatile size_t next_obj;   /* written by the handler */
static volatile int handler_mode;   /* 0: empty, 1: 64 rcu_free_nolock, 2: nolock alloc/free */
static volatile unsigned long handler_calls;

static void handler(int sig)
{
	(void)sig;
	handler_calls++;
	if (handler_mode == 1) {
		for (int i = 0; i < 64 && next_obj < nobjs; i++) {
			rcu_free_nolock(objs[next_obj], rp);
			next_obj++;
		}
	} else if (handler_mode == 2) {
		void *p = sheaf_malloc_nolock(64);
		sheaf_free_nolock(p);
	}
}

static void fill(void)
{
	for (size_t i = 0; i < nobjs; i++)
		objs[i] = malloc(sizeof(struct obj));
	next_obj = 0;
}

static double storm_loop(double seconds, unsigned long *ops)
{
	double t0 = now(), t;
	unsigned long n = 0;
	do {
		for (int i = 0; i < 1000; i++) {
			void *p = malloc(64 + (size_t)(i & 255));
			*(volatile char *)p = 1;
			free(p);
		}
		n += 1000;
		t = now();
	} while (t - t0 < seconds);
	*ops = n;
	return t - t0;
}

int main(int argc, char **argv)
{
	nobjs = 1u << 20;
	if (argc > 2 && !strcmp(argv[1], "--objects"))
		nobjs = (size_t)atol(argv[2]);
	objs = calloc(nobjs, sizeof(*objs));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);

	fill();
	double t0 = now();
	for (size_t i = 0; i < nobjs; i++)
		rcu_free(objs[i], rp);
	double normal = (now() - t0) / (double)nobjs * 1e9;
	rcu_free_barrier();

	fill();
	t0 = now();
	for (size_t i = 0; i < nobjs; i++)
		rcu_free_nolock(objs[i], rp);
	double nolock_normal = (now() - t0) / (double)nobjs * 1e9;
	rcu_free_barrier();

	handler_mode = 0;
	size_t raises = nobjs / 64;
	t0 = now();
	for (size_t i = 0; i < raises; i++)
		raise(SIGUSR1);
	double empty_raise = (now() - t0) / (double)raises * 1e9;
	fill();
	handler_mode = 1;
	t0 = now();
	while (next_obj < nobjs)
		raise(SIGUSR1);
	double with = (now() - t0) / (double)raises * 1e9;
	double nolock_signal = (with - empty_raise) / 64.0;
	rcu_free_barrier();

	printf("bench_nolock: %zu objects of %zu bytes\n", nobjs, sizeof(struct obj));
	printf("rcu_free, normal context:         %6.1f ns per object\n", normal);
	printf("rcu_free_nolock, normal context:  %6.1f ns per object\n", nolock_normal);
	printf("rcu_free_nolock, signal handler:  %6.1f ns per object (raise+handler %.0f ns, empty %.0f ns, 64 objects per signal)\n",
	       nolock_signal, with, empty_raise);

	unsigned long quiet_ops, storm_ops;
	double qs = storm_loop(1.0, &quiet_ops);
	timer_t tm;
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGUSR1;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	handler_mode = 2;
	handler_calls = 0;
	timer_create(CLOCK_MONOTONIC, &sev, &tm);
	struct itimerspec its = { { 0, 100000 }, { 0, 100000 } };
	timer_settime(tm, 0, &its, NULL);
	double ss = storm_loop(1.0, &storm_ops);
	timer_delete(tm);
	printf("malloc/free loop without signals: %6.1f Mops/s\n", (double)quiet_ops / qs / 1e6);
	printf("malloc/free loop under the storm: %6.1f Mops/s (%.1f kHz of signals, each doing sheaf_malloc_nolock + sheaf_free_nolock)\n",
	       (double)storm_ops / ss / 1e6, (double)handler_calls / ss / 1000.0);
	free(objs);
	return 0;
}
