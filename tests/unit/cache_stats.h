/*
 * cache_stats.h - a cache's statistics as the unit tests compare them.
 */
#ifndef SHEAF_TESTS_CACHE_STATS_H
#define SHEAF_TESTS_CACHE_STATS_H

#include "sheaf.h"

static inline struct sheaf_cache_stats snap(struct sheaf_cache *c)
{
	struct sheaf_cache_stats st;
	sheaf_cache_stats_get(c, &st);
	return st;
}

#define EV(st, item) ((st).events[SHEAF_STAT_##item])
#define DELTA(a, b, item) (EV(b, item) - EV(a, item))

#endif
