/*
 * rcuscale.c - a user-space port of the kernel's kfree_rcu scale test
 * (kernel/rcu/rcuscale.c, kfree_scale_thread()).
 *
 * N threads each run `loops` times over `alloc_num` x { allocate a 24-byte
 * object that holds an rcu_head (or an rcu_ptr); free it after a grace
 * period }.  Printed, as the kernel prints them: the total time, the number
 * of grace periods elapsed ("batches") and the memory footprint (peak RSS),
 * plus the time including the final barrier, so results compare line by
 * line across methods:
 *
 *   rcu_free       sheaf's rcu_free() with a struct rcu_head field
 *   rcu_free_ptr   the same with an 8-byte struct rcu_ptr field
 *   call_rcu       liburcu's call_rcu() + free() per object (the baseline
 *                  without batching; its threads must be registered)
 *
 * Usage: rcuscale [--threads N] [--loops N] [--alloc-num N] [--method M] [--readers N]
 * Readers: registered QSBR threads that report a quiescent state in a loop,
 * so that grace periods are real (with none, QSBR grace periods are free).
 */
#include <pthread.h>
#include <sheaf.h>
#include <sheaf/rcu.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <urcu-qsbr.h>

struct obj_head {              /* 24 bytes of payload with the head, as in the kernel test */
	struct rcu_head rh;
	char payload[8];
};
struct obj_ptr {
	struct rcu_ptr rp;
	char payload[16];
};

enum method { M_RCU_FREE, M_RCU_FREE_PTR, M_CALL_RCU };
static const char *const method_names[] = { "rcu_free", "rcu_free_ptr", "call_rcu" };

static int nthreads = 2, loops = 20, alloc_num = 8000, nreaders = 1;
static enum method method = M_RCU_FREE;
static atomic_bool readers_stop;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void free_cb(struct rcu_head *head)
{
	free(head);   /* rh is the first member */
}

static void *reader(void *arg)
{
	(void)arg;
	rcu_register_thread();
	while (!atomic_load_explicit(&readers_stop, memory_order_relaxed)) {
		rcu_read_lock();
		rcu_read_unlock();
		rcu_quiescent_state();
	}
	rcu_unregister_thread();
	return NULL;
}

static void *kfree_thread(void *arg)
{
	(void)arg;
	if (method == M_CALL_RCU)
		rcu_register_thread();   /* call_rcu() wants a registered thread */
	for (int l = 0; l < loops; l++) {
		for (int i = 0; i < alloc_num; i++) {
			if (method == M_RCU_FREE_PTR) {
				struct obj_ptr *o = malloc(sizeof(*o));
				o->payload[0] = 1;
				rcu_free(o, rp);
			} else {
				struct obj_head *o = malloc(sizeof(*o));
				o->payload[0] = 1;
				if (method == M_RCU_FREE)
					rcu_free(o, rh);
				else
					call_rcu(&o->rh, free_cb);
			}
		}
		if (method == M_CALL_RCU)
			rcu_quiescent_state();
	}
	if (method == M_CALL_RCU)
		rcu_unregister_thread();
	return NULL;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			nthreads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--loops") && i + 1 < argc)
			loops = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--alloc-num") && i + 1 < argc)
			alloc_num = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--readers") && i + 1 < argc)
			nreaders = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--method") && i + 1 < argc) {
			const char *m = argv[++i];
			method = !strcmp(m, "rcu_free_ptr") ? M_RCU_FREE_PTR :
				 !strcmp(m, "call_rcu") ? M_CALL_RCU : M_RCU_FREE;
		} else {
			fprintf(stderr, "usage: %s [--threads N] [--loops N] [--alloc-num N] "
				"[--readers N] [--method rcu_free|rcu_free_ptr|call_rcu]\n", argv[0]);
			return 2;
		}
	}
	pthread_t r[64], t[256];
	if (nreaders > 64 || nthreads > 256)
		return 2;
	for (int i = 0; i < nreaders; i++)
		pthread_create(&r[i], NULL, reader, NULL);

	struct sheaf_stats s0, s1;
	sheaf_stats_get(&s0);
	double t0 = now();
	for (int i = 0; i < nthreads; i++)
		pthread_create(&t[i], NULL, kfree_thread, NULL);
	for (int i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	double t1 = now();
	if (method == M_CALL_RCU)
		rcu_barrier();
	else
		rcu_free_barrier();
	double t2 = now();
	sheaf_stats_get(&s1);
	atomic_store(&readers_stop, true);
	for (int i = 0; i < nreaders; i++)
		pthread_join(r[i], NULL);

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	unsigned long long objs = (unsigned long long)nthreads * (unsigned long long)loops *
				  (unsigned long long)alloc_num;
	unsigned long long gps = s1.rcu_grace_periods - s0.rcu_grace_periods;
	printf("rcuscale: method=%s threads=%d loops=%d alloc_num=%d readers=%d objects=%llu\n",
	       method_names[method], nthreads, loops, alloc_num, nreaders, objs);
	printf("Total time taken by all kfree'ers: %.0f ns, loops: %d, batches: %llu, memory footprint: %ldMB\n",
	       (t1 - t0) * 1e9, loops, method == M_CALL_RCU ? 0ull : gps, ru.ru_maxrss / 1024);
	printf("rcuscale: %.1f ns per object; %.1f ms including the final barrier; %.0f objects per grace period\n",
	       (t1 - t0) * 1e9 / (double)objs, (t2 - t0) * 1e3,
	       gps ? (double)(s1.rcu_objects_freed - s0.rcu_objects_freed) / (double)gps : 0.0);
	return 0;
}
