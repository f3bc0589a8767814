/*
 * stats.c - counters, snapshots and the SHEAF_STATS table.
 *
 * Slow-path events are relaxed atomic adds on the cache (rare: once per
 * sheaf of objects); the two fast-path events are plain increments in the
 * thread's pcs, folded into the cache when the thread exits and summed over
 * live threads when read.
 */
#include "internal.h"

#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static const char *const stat_names[SHEAF_NR_STATS] = {
#define STAT_NAME(name, doc) #name,
	SHEAF_STAT_LIST(STAT_NAME)
#undef STAT_NAME
};

unsigned int sheaf_build_flags(void)
{
	return (config_tiny ? SHEAF_BUILD_TINY : 0) | (config_debug ? SHEAF_BUILD_DEBUG : 0);
}

const char *sheaf_stat_name(enum sheaf_stat_item item)
{
	return (unsigned int)item < SHEAF_NR_STATS ? stat_names[item] : "?";
}

struct fast_sum {
	struct sheaf_cache *c;
	uint64_t alloc, free, rcu;
};

static void sum_thread(struct thread_cache *tc, void *arg)
{
	struct fast_sum *fs = arg;
	const struct pcs *pcs = NULL;
	if (fs->c->cls < NR_CLASSES)
		pcs = &tc->pcs[fs->c->cls];
	else if (fs->c->id < tc->nr_ext && tc->ext[fs->c->id].cache == fs->c)
		pcs = &tc->ext[fs->c->id];
	if (pcs) {
		fs->alloc += __atomic_load_n(&pcs->alloc_fast, __ATOMIC_RELAXED);
		fs->free += __atomic_load_n(&pcs->free_fast, __ATOMIC_RELAXED);
		fs->rcu += __atomic_load_n(&pcs->rcu_sheaf, __ATOMIC_RELAXED);
	}
}

void stats_cache_snapshot(struct sheaf_cache *c, struct sheaf_cache_stats *st)
{
	memset(st, 0, sizeof(*st));
	memcpy(st->name, c->name, sizeof(st->name));
	st->object_size = c->object_size;
	st->slab_bytes = SLAB_MIN_BYTES << c->slab_order;
	st->objects_per_slab = c->objects_per_slab;
	st->sheaf_capacity = c->sheaf_capacity;
	for (int i = 0; i < SHEAF_NR_STATS; i++)
		st->events[i] = __atomic_load_n(&c->stat[i], __ATOMIC_RELAXED);
	struct fast_sum fs = { c, 0, 0, 0 };
	threads_foreach(sum_thread, &fs);
	st->events[SHEAF_STAT_alloc_fast] += fs.alloc;
	st->events[SHEAF_STAT_free_fast] += fs.free;
	st->events[SHEAF_STAT_free_rcu_sheaf] += fs.rcu;

	for (unsigned int i = 0; i < sheaf_nr_nodes; i++) {
		struct cache_node *n = &c->node[i];
		lock_acquire(&n->lock);
		st->slabs += n->nr_partial + n->nr_empty + n->nr_full;
		lock_release(&n->lock);
		lock_acquire(&n->barn.lock);
		st->barn_full += n->barn.nr_full;
		st->barn_empty += n->barn.nr_empty;
		lock_release(&n->barn.lock);
	}
	st->objects_total = st->slabs * c->objects_per_slab;

	uint64_t allocs = st->events[SHEAF_STAT_alloc_fast] + st->events[SHEAF_STAT_alloc_slow];
	uint64_t frees = st->events[SHEAF_STAT_free_fast] + st->events[SHEAF_STAT_free_slow];
	st->objects_active = allocs > frees ? (size_t)(allocs - frees) : 0;
}

void sheaf_cache_stats_get(struct sheaf_cache *c, struct sheaf_cache_stats *out)
{
	stats_cache_snapshot(c, out);
}

struct foreach_arg {
	void (*fn)(const struct sheaf_cache_stats *, void *);
	void *arg;
};

/* Snapshots are taken under caches_lock but the callback runs without it,
 * so it may allocate or even create caches. */
struct snap_list {
	struct sheaf_cache_stats *v;
	size_t n, cap;
};

static void snap_one(struct sheaf_cache *c, void *arg)
{
	struct snap_list *l = arg;
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		struct sheaf_cache_stats *nv = meta_alloc(ncap * sizeof(*nv));
		if (!nv)
			return;
		if (l->n)
			memcpy(nv, l->v, l->n * sizeof(*nv));
		meta_free(l->v, l->cap * sizeof(*nv));
		l->v = nv;
		l->cap = ncap;
	}
	stats_cache_snapshot(c, &l->v[l->n++]);
}

void sheaf_stats_foreach(void (*fn)(const struct sheaf_cache_stats *st, void *arg), void *arg)
{
	if (!sheaf_ready)
		sheaf_init();
	struct snap_list l = { NULL, 0, 0 };
	caches_foreach(snap_one, &l);
	for (size_t i = 0; i < l.n; i++)
		fn(&l.v[i], arg);
	meta_free(l.v, l.cap * sizeof(*l.v));
}

static void add_totals(const struct sheaf_cache_stats *st, void *arg)
{
	struct sheaf_stats *t = arg;
	t->caches++;
	t->allocs += st->events[SHEAF_STAT_alloc_fast] + st->events[SHEAF_STAT_alloc_slow];
	t->frees += st->events[SHEAF_STAT_free_fast] + st->events[SHEAF_STAT_free_slow];
	t->active_bytes += st->objects_active * st->object_size;
}

void sheaf_stats_get(struct sheaf_stats *out)
{
	memset(out, 0, sizeof(*out));
	sheaf_stats_foreach(add_totals, out);
	uint64_t la, lf;
	large_stats(&out->large_allocs, &out->large_bytes, &out->large_cached_bytes, &la, &lf);
	out->allocs += la;
	out->frees += lf;
	out->active_bytes += out->large_bytes;
	uint64_t rfb;
	rcu_stats(&out->rcu_grace_periods, &out->rcu_objects_freed, &out->rcu_pending, &rfb);
	out->rcu_fallback = rfb;
	out->threads = threads_count();
	out->mapped_bytes = page_mapped_bytes() + meta_mapped_bytes();
	out->resident_slab_bytes = page_resident_run_bytes();
}

static void print_row(const struct sheaf_cache_stats *st, void *arg)
{
	FILE *f = arg;
	const uint64_t *e = st->events;
	if (!e[SHEAF_STAT_alloc_fast] && !e[SHEAF_STAT_alloc_slow] && !st->slabs)
		return;
	fprintf(f, "%-16s %7zu %5zu %5zu %4zu %8zu %9zu %12llu %10llu %12llu %10llu %7llu %7llu %8llu %8llu %9llu %9llu %6llu\n",
		st->name, st->object_size, st->slab_bytes >> 10, st->sheaf_capacity, st->slabs,
		st->objects_active, st->objects_total,
		(unsigned long long)e[SHEAF_STAT_alloc_fast], (unsigned long long)e[SHEAF_STAT_alloc_slow],
		(unsigned long long)e[SHEAF_STAT_free_fast], (unsigned long long)e[SHEAF_STAT_free_slow],
		(unsigned long long)e[SHEAF_STAT_sheaf_refill], (unsigned long long)e[SHEAF_STAT_sheaf_flush],
		(unsigned long long)e[SHEAF_STAT_barn_get], (unsigned long long)e[SHEAF_STAT_barn_put],
		(unsigned long long)e[SHEAF_STAT_barn_get_fail], (unsigned long long)e[SHEAF_STAT_barn_put_fail],
		(unsigned long long)e[SHEAF_STAT_slab_alloc]);
}

void sheaf_stats_print(FILE *f)
{
	struct sheaf_stats t;
	sheaf_stats_get(&t);
	fprintf(f, "sheaf statistics (pid %d)\n", (int)getpid());
	fprintf(f, "%-16s %7s %5s %5s %4s %8s %9s %12s %10s %12s %10s %7s %7s %8s %8s %9s %9s %6s\n",
		"cache", "objsize", "slabK", "sheaf", "slbs", "active", "total", "alloc_fast",
		"alloc_slow", "free_fast", "free_slow", "refill", "flush", "barn_get", "barn_put",
		"get_fail", "put_fail", "slabs+");
	sheaf_stats_foreach(print_row, f);
	fprintf(f, "large: live=%zu bytes=%zu cached_bytes=%zu\n", t.large_allocs, t.large_bytes,
		t.large_cached_bytes);
	if (t.rcu_grace_periods || t.rcu_pending)
		fprintf(f, "rcu: grace_periods=%llu freed=%llu objects/gp=%llu pending=%llu fallback=%llu\n",
			(unsigned long long)t.rcu_grace_periods, (unsigned long long)t.rcu_objects_freed,
			(unsigned long long)(t.rcu_grace_periods ? t.rcu_objects_freed / t.rcu_grace_periods : 0),
			(unsigned long long)t.rcu_pending, (unsigned long long)t.rcu_fallback);
	fprintf(f, "sheaf totals: allocs=%llu frees=%llu live=%llu mapped_bytes=%zu\n",
		(unsigned long long)t.allocs, (unsigned long long)t.frees,
		(unsigned long long)(t.allocs > t.frees ? t.allocs - t.frees : 0), t.mapped_bytes);
	fflush(f);
}

static void json_cache(const struct sheaf_cache_stats *st, void *arg)
{
	FILE *f = arg;
	const uint64_t *e = st->events;
	if (!e[SHEAF_STAT_alloc_fast] && !e[SHEAF_STAT_alloc_slow] && !st->slabs)
		return;
	fprintf(f, "    {\"name\": \"%s\", \"object_size\": %zu, \"slab_bytes\": %zu, "
		"\"objects_per_slab\": %zu, \"sheaf_capacity\": %zu, \"slabs\": %zu, "
		"\"objects_total\": %zu, \"objects_active\": %zu, \"barn_full\": %zu, "
		"\"barn_empty\": %zu, \"events\": {",
		st->name, st->object_size, st->slab_bytes, st->objects_per_slab, st->sheaf_capacity,
		st->slabs, st->objects_total, st->objects_active, st->barn_full, st->barn_empty);
	for (int i = 0; i < SHEAF_NR_STATS; i++)
		fprintf(f, "%s\"%s\": %llu", i ? ", " : "", stat_names[i], (unsigned long long)e[i]);
	fprintf(f, "}},\n");
}

void sheaf_stats_print_json(FILE *f)
{
	struct sheaf_stats t;
	sheaf_stats_get(&t);
	fprintf(f, "{\"sheaf\": \"%s\", \"pid\": %d,\n  \"caches\": [\n", SHEAF_VERSION, (int)getpid());
	sheaf_stats_foreach(json_cache, f);
	fprintf(f, "    null\n  ],\n  \"totals\": {\"allocs\": %llu, \"frees\": %llu, \"threads\": %zu, "
		"\"mapped_bytes\": %zu, \"resident_slab_bytes\": %zu, \"active_bytes\": %zu, "
		"\"large_allocs\": %zu, \"large_bytes\": %zu, \"large_cached_bytes\": %zu, "
		"\"rcu_grace_periods\": %llu, \"rcu_objects_freed\": %llu, \"rcu_pending\": %llu, "
		"\"rcu_fallback\": %llu}\n}\n",
		(unsigned long long)t.allocs, (unsigned long long)t.frees, t.threads, t.mapped_bytes,
		t.resident_slab_bytes, t.active_bytes, t.large_allocs, t.large_bytes, t.large_cached_bytes,
		(unsigned long long)t.rcu_grace_periods, (unsigned long long)t.rcu_objects_freed,
		(unsigned long long)t.rcu_pending, (unsigned long long)t.rcu_fallback);
	fflush(f);
}

/* coreutils, grep, tar, xz... close stderr before exit; the table goes to
 * a copy of fd 2 taken at start-up (close-on-exec, so children do not
 * inherit it). */
static int stats_fd = -1;

void stats_init(void)
{
	if (sheaf_opt.stats)
		stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
}

__attribute__((destructor)) void stats_at_exit(void)
{
	if (!sheaf_ready || !sheaf_opt.stats)
		return;
	FILE *f = stats_fd >= 0 ? fdopen(stats_fd, "w") : NULL;
	if (sheaf_opt.stats_json)
		sheaf_stats_print_json(f ? f : stderr);
	else
		sheaf_stats_print(f ? f : stderr);
	if (f)
		fclose(f);
}
