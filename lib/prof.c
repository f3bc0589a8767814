/*
 * prof.c - a sampling heap profiler: SHEAF_OPTIONS=prof_sample=512k.
 *
 * About one allocation per prof_sample bytes allocated (exponentially
 * distributed gaps, as tcmalloc samples) is recorded with its size and a
 * libunwind backtrace; freeing it drops the record.  At exit the records
 * still alive are grouped by call site and the sites holding the most live
 * bytes are printed, each sample weighted by the bytes it stands for.
 *
 * Profiling runs every thread without per-thread state (like the valgrind
 * mode), so that every malloc and free reaches the slow paths where the
 * hooks are: the inline fast paths pay nothing when profiling is off.
 */
#include "internal.h"

#include <string.h>

#ifdef HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#endif

#define PROF_BUCKETS 4096
#define PROF_DEPTH 12

struct sample {
	const void *ptr;
	size_t size;
	size_t weight;          /* bytes this sample stands for */
	int depth;
	void *addrs[PROF_DEPTH];
	struct sample *next;
};

int sheaf_prof_on;
static sheaf_lock_t prof_lock = SHEAF_LOCK_INIT;
static struct sample *table[PROF_BUCKETS];
static uint64_t prof_samples, prof_live;
static __thread int64_t prof_left __attribute__((tls_model("initial-exec")));
static __thread uint64_t prof_rng __attribute__((tls_model("initial-exec")));

static inline size_t bucket_of(const void *p)
{
	return ((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull >> (64 - 12);
}

/* The next gap: exponential with mean prof_sample (-ln(u) * mean, with a
 * cheap logarithm: enough for sampling). */
static int64_t next_gap(void)
{
	if (!prof_rng)
		prof_rng = (uintptr_t)&prof_rng ^ sheaf_free_key;
	prof_rng ^= prof_rng << 13;
	prof_rng ^= prof_rng >> 7;
	prof_rng ^= prof_rng << 17;
	double u = (double)((prof_rng >> 11) + 1) / 9007199254740993.0;   /* (0, 1] */
	double l = 0;
	/* ln(u) by repeated halving: u = m * 2^e, ln u = ln m + e ln 2 */
	int e = 0;
	while (u < 0.5) {
		u *= 2;
		e--;
	}
	double x = (u - 1) / (u + 1), x2 = x * x;
	l = 2 * x * (1 + x2 / 3 + x2 * x2 / 5) + e * 0.6931471805599453;
	return (int64_t)(-l * (double)sheaf_opt.prof_sample) + 1;
}

void prof_init(void)
{
	sheaf_prof_on = sheaf_opt.prof_sample != 0;
}

void prof_alloc(const void *p, size_t size)
{
	if (!p)
		return;
	if (prof_left == 0)
		prof_left = next_gap();
	prof_left -= (int64_t)size;
	if (prof_left > 0)
		return;
	prof_left = next_gap();
	struct sample *s = meta_alloc(sizeof(*s));
	if (!s)
		return;
	s->ptr = p;
	s->size = size;
	s->weight = size > sheaf_opt.prof_sample ? size : sheaf_opt.prof_sample;
#ifdef HAVE_LIBUNWIND
	if (!sheaf_under_valgrind)
		s->depth = unw_backtrace(s->addrs, PROF_DEPTH);
#endif
	size_t b = bucket_of(p);
	lock_acquire(&prof_lock);
	s->next = table[b];
	table[b] = s;
	prof_samples++;
	prof_live++;
	lock_release(&prof_lock);
}

void prof_free(const void *p)
{
	size_t b = bucket_of(p);
	if (!__atomic_load_n(&table[b], __ATOMIC_RELAXED))
		return;
	struct sample *found = NULL;
	lock_acquire(&prof_lock);
	for (struct sample **pp = &table[b]; *pp; pp = &(*pp)->next)
		if ((*pp)->ptr == p) {
			found = *pp;
			*pp = found->next;
			prof_live--;
			break;
		}
	lock_release(&prof_lock);
	meta_free(found, sizeof(*found));
}

struct site {
	struct sample *first;   /* the stack */
	size_t bytes, count;
};

static bool same_stack(const struct sample *a, const struct sample *b)
{
	return a->depth == b->depth && !memcmp(a->addrs, b->addrs, (size_t)a->depth * sizeof(void *));
}

/* Top live-bytes sites, on stderr (no stdio: it may run at exit). */
void prof_report(void)
{
	enum { TOP = 10, MAX_SITES = 512 };
	static struct site sites[MAX_SITES];
	size_t nsites = 0, total = 0;
	lock_acquire(&prof_lock);
	for (size_t b = 0; b < PROF_BUCKETS; b++)
		for (struct sample *s = table[b]; s; s = s->next) {
			total += s->weight;
			size_t i = 0;
			while (i < nsites && !same_stack(sites[i].first, s))
				i++;
			if (i == nsites) {
				if (nsites == MAX_SITES)
					continue;
				sites[nsites++] = (struct site){ s, 0, 0 };
			}
			sites[i].bytes += s->weight;
			sites[i].count++;
		}
	diag_printf("sheaf heap profile: %llu allocations sampled (1 per %zu bytes), %llu still live, "
		    "about %zu KiB live in %zu sites\n", (unsigned long long)prof_samples,
		    sheaf_opt.prof_sample, (unsigned long long)prof_live, total >> 10, nsites);
	for (int t = 0; t < TOP && nsites; t++) {
		size_t best = 0;
		for (size_t i = 1; i < nsites; i++)
			if (sites[i].bytes > sites[best].bytes)
				best = i;
		struct site *s = &sites[best];
		diag_printf("  %zu KiB (%zu%%) in %zu samples, e.g. %zu-byte blocks, allocated at:\n",
			    s->bytes >> 10, total ? s->bytes * 100 / total : 0, s->count, s->first->size);
		diag_frames("      ", s->first->addrs, s->first->depth, 8);
		sites[best] = sites[--nsites];
	}
	lock_release(&prof_lock);
}

__attribute__((destructor)) static void prof_at_exit(void)
{
	if (sheaf_prof_on)
		prof_report();
}
