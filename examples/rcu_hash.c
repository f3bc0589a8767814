/*
 * rcu_hash.c - an RCU-protected hash table whose replaced entries are freed
 * with rcu_free() through an 8-byte struct rcu_ptr.
 *
 * Build:  cc rcu_hash.c $(pkg-config --cflags --libs sheaf) -lurcu-qsbr -lpthread -o rcu_hash
 * Run:    ./rcu_hash [seconds]        (SHEAF_STATS=1 ./rcu_hash shows the rcu line)
 *
 * Readers (QSBR: registered, they announce quiescent states between
 * lookups) look keys up without locks and check each entry's canary.
 * Updaters replace entries under a per-bucket lock and hand the old entry
 * to rcu_free(): it is freed only once every reader that could still see it
 * has passed a quiescent state.  Were it freed early, sheaf would hand it
 * out again and a reader would see the new owner's canary.
 */
#include <pthread.h>
#include <sheaf.h>
#include <sheaf/rcu.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <urcu-qsbr.h>

#define BUCKETS 1024
#define KEYS    4096
#define READERS 2
#define UPDATERS 2
#define CANARY(key) (0x5eaf0000u ^ (unsigned)(key))

struct entry {
	struct entry *next;
	unsigned int key;
	unsigned int canary;        /* CANARY(key) for the entry's whole life */
	unsigned long value;
	struct rcu_ptr rp;          /* for rcu_free(): one pointer */
};

static struct entry *table[BUCKETS];
static pthread_mutex_t locks[BUCKETS];
static atomic_bool stop;
static atomic_ulong lookups, replaced, bad;

static unsigned int bucket(unsigned int key) { return (key * 2654435761u) % BUCKETS; }

static void *reader(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;
	rcu_register_thread();
	unsigned long n = 0;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned int key = (unsigned int)rand_r(&seed) % KEYS;
		for (struct entry *e = rcu_dereference(table[bucket(key)]); e;
		     e = rcu_dereference(e->next))
			if (e->canary != CANARY(e->key))
				atomic_fetch_add(&bad, 1);   /* freed under our feet */
		if (++n % 64 == 0)
			rcu_quiescent_state();   /* no references held here */
	}
	atomic_fetch_add(&lookups, n);
	rcu_unregister_thread();
	return NULL;
}

/* Replaces key's entry (or inserts it): the old one goes to rcu_free(). */
static void replace(unsigned int key, unsigned long value)
{
	struct entry *n = malloc(sizeof(*n));
	if (!n)
		abort();
	n->key = key;
	n->canary = CANARY(key);
	n->value = value;
	unsigned int b = bucket(key);
	pthread_mutex_lock(&locks[b]);
	struct entry **pp = &table[b], *old = NULL;
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->key == key) {
			old = *pp;
			break;
		}
	n->next = old ? old->next : table[b];
	if (old)
		rcu_assign_pointer(*pp, n);   /* readers see old or n, both whole */
	else
		rcu_assign_pointer(table[b], n);
	pthread_mutex_unlock(&locks[b]);
	if (old) {
		rcu_free(old, rp);            /* after every reader moved on */
		atomic_fetch_add(&replaced, 1);
	}
}

static void *updater(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;
	/* Updaters need not register: rcu_free() works from any thread. */
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		replace((unsigned int)rand_r(&seed) % KEYS, (unsigned long)rand_r(&seed));
	return NULL;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	for (int i = 0; i < BUCKETS; i++)
		pthread_mutex_init(&locks[i], NULL);
	for (unsigned int k = 0; k < KEYS; k++)
		replace(k, k);

	pthread_t r[READERS], u[UPDATERS];
	for (int i = 0; i < READERS; i++)
		pthread_create(&r[i], NULL, reader, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < UPDATERS; i++)
		pthread_create(&u[i], NULL, updater, (void *)(uintptr_t)(i + 100));
	struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	for (int i = 0; i < READERS; i++)
		pthread_join(r[i], NULL);
	for (int i = 0; i < UPDATERS; i++)
		pthread_join(u[i], NULL);

	rcu_free_barrier();   /* everything replaced is freed now */
	struct sheaf_stats st;
	sheaf_stats_get(&st);
	printf("%lu lookups, %lu entries replaced and rcu_free()'d, %lu canary errors; "
	       "%llu grace periods, %llu objects freed after them (%llu per grace period)\n",
	       atomic_load(&lookups), atomic_load(&replaced), atomic_load(&bad),
	       (unsigned long long)st.rcu_grace_periods, (unsigned long long)st.rcu_objects_freed,
	       (unsigned long long)(st.rcu_grace_periods ? st.rcu_objects_freed / st.rcu_grace_periods : 0));
	return atomic_load(&bad) ? 1 : 0;
}
