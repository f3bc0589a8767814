/*
 * sheaf.h - public interface of the sheaf allocator.
 *
 * sheaf is a malloc for Linux built like the kernel's SLUB allocator with
 * sheaves: slab caches of equal-size objects, per-thread "sheaves" (arrays of
 * free object pointers) in front of them, and a per-cache "barn" of full and
 * empty sheaves behind them.
 *
 * Linking with -lsheaf (or LD_PRELOAD=libsheaf.so) replaces the whole malloc
 * family.  This header adds what a program can only get by linking: slab
 * caches, the sheaf_* names of the malloc family (usable even where another
 * malloc is interposed, e.g. under AddressSanitizer), and statistics.
 *
 * Conventions used below:
 *   Thread-safe  - may be called from any thread concurrently, no external
 *                  locking needed.
 *   AS-unsafe    - not async-signal-safe: do not call from a signal handler
 *                  (the _nolock variants of sheaf/rcu.h are for that).
 *   May block    - may take an internal mutex or make a system call.
 */
#ifndef SHEAF_H
#define SHEAF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SHEAF_API __attribute__((visibility("default")))
#define SHEAF_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#else
#define SHEAF_API
#define SHEAF_MALLOC_ATTR
#endif

#define SHEAF_VERSION "0.1.0"

/* ===================================================================== *
 *  malloc family under sheaf's own names
 * ===================================================================== */
/*
 * Same contracts as the C / POSIX / glibc functions of the same name
 * (errno ENOMEM on exhaustion or impossible sizes, EINVAL for a bad
 * alignment).  Thread-safe, AS-unsafe, may block (mmap, slow paths).
 * Passing a pointer that sheaf did not hand out, an interior pointer or a
 * pointer already freed prints a one-line diagnostic and aborts (see the
 * abort_on_error option).
 */
SHEAF_API void *sheaf_malloc(size_t size) SHEAF_MALLOC_ATTR;
SHEAF_API void *sheaf_calloc(size_t nmemb, size_t size) SHEAF_MALLOC_ATTR;
SHEAF_API void *sheaf_realloc(void *ptr, size_t size);
SHEAF_API void *sheaf_reallocarray(void *ptr, size_t nmemb, size_t size);
SHEAF_API void sheaf_free(void *ptr);
SHEAF_API void sheaf_free_sized(void *ptr, size_t size);
SHEAF_API void sheaf_free_aligned_sized(void *ptr, size_t alignment, size_t size);
SHEAF_API int sheaf_posix_memalign(void **memptr, size_t alignment, size_t size);
SHEAF_API void *sheaf_aligned_alloc(size_t alignment, size_t size) SHEAF_MALLOC_ATTR;
SHEAF_API void *sheaf_memalign(size_t alignment, size_t size) SHEAF_MALLOC_ATTR;
SHEAF_API void *sheaf_valloc(size_t size) SHEAF_MALLOC_ATTR;
SHEAF_API void *sheaf_pvalloc(size_t size) SHEAF_MALLOC_ATTR;
/* How this library was built (constants below), for programs and tests
 * that adapt to it.  Thread-safe, AS-safe. */
#define SHEAF_BUILD_TINY  0x1u  /* --enable-tiny: no sheaves, no batching, no thread state */
#define SHEAF_BUILD_DEBUG 0x2u  /* --enable-debug: internal invariant checks */
SHEAF_API unsigned int sheaf_build_flags(void);
/* Usable size of a live block (>= the size asked for); 0 for NULL. */
SHEAF_API size_t sheaf_malloc_usable_size(void *ptr);
/*
 * Returns cached free memory to the OS: the calling thread's sheaves, every
 * barn, empty slabs and cached large mappings.  Returns 1 if any memory was
 * released, 0 otherwise (glibc's convention).  Thread-safe, may block.
 */
SHEAF_API int sheaf_malloc_trim(size_t pad);

/* ===================================================================== *
 *  From signal handlers (kmalloc_nolock / kfree_nolock)
 * ===================================================================== */
/*
 * Async-signal-safe (POSIX sense): callable from a signal handler that
 * interrupted anything, sheaf's own malloc and free included.  They never
 * block, never take a lock that the interrupted code may hold, and never
 * map memory.
 *
 * sheaf_malloc_nolock() serves sizes up to 32 KiB from the calling thread's
 * sheaves; it returns NULL with errno EAGAIN rather than wait (the thread was
 * interrupted inside the allocator, its sheaves are empty and the barn is
 * busy, or the thread never allocated before).  Its objects may be freed
 * with free(), sheaf_free_nolock(), rcu_free() or rcu_free_nolock().
 *
 * sheaf_free_nolock() frees any block from sheaf (malloc, caches,
 * sheaf_malloc_nolock).  When it cannot put the object into a sheaf at
 * once, the free is deferred to the next allocator slow path of any thread
 * (sheaf_malloc_trim() and the rcu barriers run it too) or to the
 * background thread; the object is unusable from the call on, and a second
 * free of it is diagnosed.
 * Bad pointers are diagnosed as by free().
 */
SHEAF_API void *sheaf_malloc_nolock(size_t size) SHEAF_MALLOC_ATTR;
SHEAF_API void sheaf_free_nolock(void *ptr);

/* ===================================================================== *
 *  Slab caches (kmem_cache_*)
 * ===================================================================== */
struct sheaf_cache;

/* Flags for sheaf_cache_create(). */
#define SHEAF_HWCACHE_ALIGN 0x1u  /* align objects to a cache line (64 B)          */
#define SHEAF_NO_SHEAVES    0x2u  /* every alloc/free goes to the slabs (no per-thread
                                     caching; for debugging or tiny footprints)     */

/*
 * Creates a cache of objects of `size` bytes aligned to `align` (0 = natural,
 * 8 or 16 bytes; otherwise a power of two up to 4096).  `ctor`, if not NULL,
 * is called once for each object when its slab is first carved (as in the
 * kernel): objects must be returned to the cache in their constructed state.
 * `name` is copied (first 31 characters) and shows up in statistics and
 * diagnostics.  Returns NULL with errno EINVAL (bad size/align/flags) or
 * ENOMEM.  Thread-safe, may block.
 */
SHEAF_API struct sheaf_cache *sheaf_cache_create(const char *name, size_t size, size_t align,
                                                 unsigned int flags, void (*ctor)(void *obj));
/* One object, or NULL with errno ENOMEM.  Thread-safe, AS-unsafe. */
SHEAF_API void *sheaf_cache_alloc(struct sheaf_cache *cache) SHEAF_MALLOC_ATTR;
/* Frees an object of this cache (NULL is ignored).  A pointer from another
 * cache, an interior pointer or a double free is diagnosed.  Thread-safe. */
SHEAF_API void sheaf_cache_free(struct sheaf_cache *cache, void *obj);
/* Allocates exactly `n` objects into `out`, or none: returns n, or 0 with
 * errno ENOMEM.  Thread-safe. */
SHEAF_API size_t sheaf_cache_alloc_bulk(struct sheaf_cache *cache, size_t n, void **out);
/* Frees `n` objects of this cache.  Thread-safe. */
SHEAF_API void sheaf_cache_free_bulk(struct sheaf_cache *cache, size_t n, void **objs);
/*
 * Destroys a cache.  The caller guarantees that no other thread uses the
 * cache any more (as with kmem_cache_destroy).  Objects still cached in any
 * thread's sheaves are taken back.  If objects are still allocated, each
 * leaking slab is reported on stderr, nothing is released, the cache stays
 * valid and -1 is returned with errno EBUSY; otherwise 0.  Thread-safe with
 * respect to other caches, may block.
 */
SHEAF_API int sheaf_cache_destroy(struct sheaf_cache *cache);
/* Object size as created, and the name.  Thread-safe, AS-safe. */
SHEAF_API size_t sheaf_cache_object_size(const struct sheaf_cache *cache);
SHEAF_API const char *sheaf_cache_name(const struct sheaf_cache *cache);

/*
 * With SHEAF_DEBUG=Z or P: checks the red zones of every allocated object
 * and the poison of every free one in the debugged caches, reporting each
 * problem as a free would.  Returns the number of problems (0 without
 * SHEAF_DEBUG).  Thread-safe, takes each cache's lock in turn.
 */
SHEAF_API int sheaf_debug_check(void);

/* ===================================================================== *
 *  Statistics
 * ===================================================================== */
/*
 * Per-cache event counters in the spirit of CONFIG_SLUB_STATS.  They are
 * always on: fast-path counters live in thread-local memory and are summed
 * when read, so a snapshot taken while other threads run is approximate
 * (each counter is individually exact once those threads are quiescent).
 */
#define SHEAF_STAT_LIST(X)                                                          \
	X(alloc_fast,      "allocations served from the thread's main sheaf")           \
	X(alloc_slow,      "allocations that left the fast path")                       \
	X(free_fast,       "frees into the thread's main sheaf")                        \
	X(free_slow,       "frees that left the fast path")                             \
	X(sheaf_swap,      "main and spare sheaves exchanged")                          \
	X(barn_get,        "full sheaf taken from the barn")                            \
	X(barn_get_fail,   "barn had no full sheaf")                                    \
	X(barn_put,        "full sheaf given to the barn")                              \
	X(barn_put_fail,   "barn was at its bound of full sheaves")                     \
	X(sheaf_refill,    "sheaf refilled from slabs")                                 \
	X(sheaf_flush,     "sheaf flushed to slabs")                                    \
	X(sheaf_alloc,     "empty sheaf allocated")                                     \
	X(sheaf_free,      "empty sheaf freed")                                         \
	X(slab_direct,     "objects allocated or freed on slabs directly (no sheaf)")   \
	X(slab_alloc,      "slabs created")                                             \
	X(slab_free,       "slabs returned to the page source")                         \
	X(free_invalid,    "invalid, interior or double frees diagnosed")               \
	X(free_rcu_sheaf,  "rcu_free() stored in the thread's rcu_free sheaf")          \
	X(free_rcu_sheaf_fail, "rcu_free() that could not use an rcu_free sheaf")       \
	X(rcu_sheaf_barn,  "rcu_free sheaves given to the barn after a grace period")  \
	X(rcu_sheaf_flush, "rcu_free sheaves flushed to slabs after a grace period")  \
	X(guard_fail,      "secure mode: guard pages that could not be set")          \
	X(barn_decay,      "full sheaves flushed from a barn over its keep for barn_decay_ms") \
	X(barn_get_remote, "full sheaf taken from another node's barn beyond its keep (none at home)")

enum sheaf_stat_item {
#define SHEAF_STAT_ENUM(name, doc) SHEAF_STAT_##name,
	SHEAF_STAT_LIST(SHEAF_STAT_ENUM)
#undef SHEAF_STAT_ENUM
	SHEAF_NR_STATS
};

struct sheaf_cache_stats {
	char name[32];
	size_t object_size;      /* bytes per object as usable by the caller  */
	size_t slab_bytes;       /* bytes per slab                             */
	size_t objects_per_slab;
	size_t sheaf_capacity;   /* 0 when the cache runs without sheaves     */
	size_t slabs;            /* slabs currently held                       */
	size_t objects_total;    /* objects in those slabs                     */
	size_t objects_active;   /* allocated and not yet freed                */
	size_t barn_full;        /* full sheaves parked in the barn            */
	size_t barn_empty;       /* empty sheaves parked in the barn           */
	uint64_t events[SHEAF_NR_STATS];
};

struct sheaf_stats {
	size_t caches;           /* number of caches (size classes included)  */
	size_t threads;          /* threads with live per-thread state         */
	size_t mapped_bytes;     /* address space obtained from the OS         */
	size_t resident_slab_bytes; /* bytes of slabs not returned to the OS   */
	size_t large_allocs;     /* live large (page-mapped) allocations       */
	size_t large_bytes;      /* bytes in live large allocations            */
	size_t large_cached_bytes; /* freed large mappings kept for reuse      */
	uint64_t allocs;         /* total allocations, all caches + large      */
	uint64_t frees;          /* total frees, all caches + large            */
	size_t active_bytes;     /* bytes in allocated objects (class sizes)   */
	uint64_t rcu_grace_periods; /* grace periods the drain thread waited  */
	uint64_t rcu_objects_freed; /* objects freed after a grace period     */
	uint64_t rcu_pending;    /* rcu_free()'d objects handed off, not yet freed */
	uint64_t rcu_fallback;   /* rcu_free()s linked through their field    */
};

/* Totals.  Thread-safe, AS-unsafe, takes internal locks briefly. */
SHEAF_API void sheaf_stats_get(struct sheaf_stats *out);
/* Calls `fn` for each cache with a snapshot of its statistics.  `fn` may
 * allocate.  Thread-safe. */
SHEAF_API void sheaf_stats_foreach(void (*fn)(const struct sheaf_cache_stats *st, void *arg),
                                   void *arg);
/* Snapshot of one cache.  Thread-safe. */
SHEAF_API void sheaf_cache_stats_get(struct sheaf_cache *cache, struct sheaf_cache_stats *out);
/* The slabinfo-like table that SHEAF_STATS=1 prints at exit. */
SHEAF_API void sheaf_stats_print(FILE *out);
/* The same as JSON (SHEAF_STATS=json): {"caches": [...], "totals": {...}};
 * the caches array ends with a null element. */
SHEAF_API void sheaf_stats_print_json(FILE *out);
/* Human name of a counter, e.g. "barn_get". */
SHEAF_API const char *sheaf_stat_name(enum sheaf_stat_item item);

#ifdef __cplusplus
}
#endif
#endif /* SHEAF_H */
