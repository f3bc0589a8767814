/*
 * internal.h - the types of sheaf and the rules that bind them.
 *
 * Layers, bottom up (one file each):
 *   page.c      page source: address space from mmap, slab-sized runs, madvise
 *   pagemap.c   radix map page -> owning slab or large allocation (O(1))
 *   meta.c      metadata allocator (slab headers, sheaves, thread state)
 *   sizeclass.c malloc size classes and their (static) caches
 *   slab.c      a slab: a run of pages carved into equal objects, free bitmap
 *   cache.c     a cache (kmem_cache): per-node slab lists, bulk alloc/free on slabs
 *   barn.c      per-node store of full and empty sheaves of a cache
 *   sheaf.c     per-thread sheaves: refill, flush, the slow paths
 *   large.c     allocations above the largest class: whole mappings
 *   thread.c    per-thread state, init, thread exit, fork
 *   malloc.c    the malloc family (sheaf_* names)
 *   zero.c      zeroing calloc()'s blocks
 *   stats.c, options.c, diag.c
 *
 * Object states (an object of a slab is in exactly one):
 *   ALLOCATED  owned by the program; its marker word (obj_marker(): in the
 *              object at cache->marker_off, or beside the slab header for
 *              objects of a page or more) != marker(p)
 *   IN SHEAF   in some thread's main/spare sheaf or a barn sheaf; marker set
 *              (an rcu sheaf waits in a barn unsettled: its markers are
 *              written by the thread that takes it, sheaf_settle())
 *   IN SLAB    its bit in slab->freemap is 1; marker set (or never-used memory)
 * The free marker (free_key ^ address, written on free, cleared on alloc) is
 * how a double free is caught on the fast path without touching shared
 * memory; the freemap catches the rest exactly when objects reach the slab.
 *
 * Sheaf states: a sheaf is owned by exactly one of: a thread's pcs (main or
 * spare; unlocked, only that thread touches it), a barn list (under the barn
 * lock; then it is completely full or completely empty), or nobody while in
 * transit in a slow path.
 *
 * Lock order (outer first).  Fast paths take no lock at all.
 *   caches_lock -> threads_lock -> barn.lock -> cache_node.lock -> large_lock
 *   -> page_lock -> meta_lock
 * A cache has a barn and a slab lock per node (struct cache_node).  No path
 * holds two of them at once (sheaves leave the barn before they are flushed,
 * and a flush that crosses nodes lets one node's lock go before it takes
 * the next), but fork takes them all, cache by cache, node by node, barn
 * before slabs.
 */
#ifndef SHEAF_INTERNAL_H
#define SHEAF_INTERNAL_H

#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#if HAVE_DECL___LIBC_SINGLE_THREADED
#include <sys/single_threaded.h>
#endif

#include "sheaf.h"

/* Everything declared from here on is the library's own (-fvisibility=hidden
 * covers definitions only): the compiler then addresses these globals
 * directly, not through the GOT, e.g. free()'s load of sheaf_free_key and
 * memalign's class table.  No system header may be included below. */
#pragma GCC visibility push(hidden)

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define noinline    __attribute__((noinline))
/*
 * The hot entry points start on a cache line: with the default 16-byte
 * alignment an unrelated change elsewhere moved realloc()'s in-place path
 * across a line boundary and the realloc_grow row ran 7-9% slower (the
 * same instructions, by callgrind); aligned, the rows stay where they are.
 */
#define HOT_ALIGN   __attribute__((aligned(64)))
#define cold        __attribute__((cold))
#define barrier()   __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* ------------------------------------------------------------------ build */
#ifdef SHEAF_CONFIG_TINY
static const bool config_tiny = true;
#else
static const bool config_tiny = false;
#endif
/* The free marker (below): the fast-path double-free check.  Only
 * --disable-hardening turns it off, to measure what it costs. */
#ifdef SHEAF_CONFIG_NO_HARDENING
static const bool config_harden = false;
#else
static const bool config_harden = true;
#endif
#ifdef SHEAF_CONFIG_DEBUG
static const bool config_debug = true;
#else
static const bool config_debug = false;
#endif

/* A millisecond clock that costs a vDSO read (decay of empty slabs and of
 * cached large mappings); wraps every 49 days, which unsigned differences
 * tolerate. */
static inline uint32_t coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

/* Milliseconds from `since` to `now`, both coarse_ms() stamps, and 0 when
 * `now` is the earlier: a stamp rounded up (barn.c sets the low bit, since
 * 0 means "none") can be ahead of the clock for a tick, and an unsigned
 * difference then reads as 49 days (barns flushed their burst sheaves at
 * once, whenever the coarse clock's readings were even). */
static inline uint32_t ms_elapsed(uint32_t now, uint32_t since)
{
	int32_t d = (int32_t)(now - since);
	return d > 0 ? (uint32_t)d : 0;
}

/* Internal invariant checks: compiled in every build, executed in debug.
 * The static analyzer (clang-tidy, `make lint`) takes them as facts, so
 * that it does not follow paths the invariants rule out. */
#ifdef __clang_analyzer__
#define sheaf_assert(cond)                                                       \
	do {                                                                     \
		if (!(cond))                                                     \
			__builtin_unreachable();                                 \
	} while (0)
#else
#define sheaf_assert(cond)                                                       \
	do {                                                                     \
		if (config_debug && unlikely(!(cond)))                           \
			diag_assert_fail(#cond, __FILE__, __LINE__);             \
	} while (0)
#endif

/* An invariant the compiler may also rely on in release builds (checked
 * in debug builds): for facts of a fast path that spare it a test. */
#define sheaf_assume(cond)                                                       \
	do {                                                                     \
		sheaf_assert(cond);                                              \
		if (!config_debug && !(cond))                                    \
			__builtin_unreachable();                                 \
	} while (0)

#define PAGE_SHIFT 12
#define PAGE_SIZE  ((size_t)1 << PAGE_SHIFT)
#define CACHELINE  64

#define SMALL_MAX        32768u   /* largest malloc size class */
#define NR_CLASSES       41       /* 8, 16..128 step 16, then 4 per doubling */
#define CLASS_NONE       NR_CLASSES  /* slab->cls of a user cache */
#define CLASS_PAGE       28       /* the first class of a page or more (4096) */
#define SLAB_MIN_BYTES   ((size_t)16 << 10)
#define SLAB_MAX_ORDER   8        /* 16 KiB << 8 = 4 MiB */
#define SLAB_MAX_OBJECTS 2048     /* 16 KiB / 8 B */
#define CACHE_OBJ_MAX    ((size_t)128 << 10) /* user cache objects (index math) */
#define RECIP_SHIFT      40

/* ------------------------------------------------------------------ locks */
/*
 * A futex mutex (Drepper's "mutex 2"): 0 free, 1 held, 2 held with waiters.
 * Uncontended it is one compare-and-swap to take and one exchange to give,
 * a third of pthread_mutex_t's instructions, which matters on the large
 * allocation path and on every sheaf exchange.  A plain int is also what
 * fork() needs: the child re-initialises it with a store.  (lock.c)
 */
typedef struct {
	int v;
} sheaf_lock_t;
#define SHEAF_LOCK_INIT { 0 }
void lock_acquire_slow(sheaf_lock_t *l);
void lock_wake(sheaf_lock_t *l);
/*
 * While the process has one thread no other thread can contend, so a lock
 * is a plain store (glibc's malloc skips its arena locks the same way):
 * two fewer atomic read-modify-writes per large malloc/free or sheaf
 * exchange in single-threaded programs.  The value stored is the same (1),
 * so a lock taken this way and released after a pthread_create() - the
 * rcu drain thread is created under drain_lock - wakes a waiter as usual.
 * glibc clears __libc_single_threaded before the new thread exists and sets
 * it again only in a fork child, where we are alone as well.
 */
#if HAVE_DECL___LIBC_SINGLE_THREADED
static inline bool lock_single(void) { return __libc_single_threaded; }
#else
static inline bool lock_single(void) { return false; }
#endif
static inline void lock_acquire(sheaf_lock_t *l)
{
	int c = 0;
	if (lock_single() && likely(__atomic_load_n(&l->v, __ATOMIC_RELAXED) == 0)) {
		__atomic_store_n(&l->v, 1, __ATOMIC_RELAXED);
		return;
	}
	if (likely(__atomic_compare_exchange_n(&l->v, &c, 1, false, __ATOMIC_ACQUIRE,
					       __ATOMIC_RELAXED)))
		return;
	lock_acquire_slow(l);
}
static inline bool lock_try(sheaf_lock_t *l)
{
	int c = 0;
	return __atomic_compare_exchange_n(&l->v, &c, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
static inline void lock_release(sheaf_lock_t *l)
{
	if (lock_single()) {
		__atomic_store_n(&l->v, 0, __ATOMIC_RELAXED);
		return;
	}
	if (unlikely(__atomic_exchange_n(&l->v, 0, __ATOMIC_RELEASE) == 2))
		lock_wake(l);
}
static inline void lock_reinit(sheaf_lock_t *l)
{
	__atomic_store_n(&l->v, 0, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- options */
/* type, name, default, help.  Parsed once from SHEAF_OPTIONS (options.c). */
#define SHEAF_OPTIONS(X)                                                             \
	X(bool, abort_on_error, 1, "abort() after diagnosing a bad free; 0 = report, leak the block, continue") \
	X(bool, stats, 0, "print the statistics table on stderr at exit (alias: SHEAF_STATS=1)") \
	X(bool, stats_json, 0, "print the statistics at exit as JSON instead (alias: SHEAF_STATS=json)") \
	X(bool, secure, 0, "guard page after every slab and large block, randomised object order (costs: see README)") \
	X(bool, backtrace, 1, "add a libunwind backtrace to every bad-pointer report")  \
	X(size, prof_sample, 0, "heap profiler: sample one allocation per this many bytes (0 = off); top sites printed at exit") \
	X(bool, valgrind, 1, "under valgrind: report blocks to memcheck (threads then run without sheaves)") \
	X(size, large_cache, 64u << 20, "bytes of freed large mappings kept for reuse")   \
	X(size, large_cache_max, 32u << 20, "largest single mapping kept in the large cache") \
	X(size, large_thread, 1u << 20, "largest freed large block each thread keeps for its own next large malloc (0 = none)") \
	X(uint, large_decay_ms, 1000, "cached large mappings unused this long are unmapped (checked on large frees)") \
	X(uint, barn_full, 0, "full sheaves a barn keeps before sheaves flush to slabs; 0 = about 1 MiB of objects (8..256), and up to 8x that for barn_decay_ms") \
	X(uint, barn_decay_ms, 1000, "full sheaves over the 1 MiB of an automatic barn_full flush to slabs after this long (checked on frees)") \
	X(uint, barn_empty, 16, "empty sheaves a barn keeps before they are freed")       \
	X(uint, slab_reserve, 1, "empty slabs each cache node always keeps for reuse")           \
	X(size, slab_retain, 32u << 20, "bytes of empty slabs kept resident beyond the reserves, all caches together") \
	X(uint, slab_decay_ms, 1000, "empty slabs unused this long go back to the OS (checked on allocator activity)") \
	X(uint, rcu_delay_ms, 30, "how long rcu_free() batches wait to fill before their grace period") \
	X(uint, rcu_batch, 8192, "objects pending that start a grace period at once")     \
	X(uint, rcu_fork_barrier_ms, 2000, "rcu_free_barrier() in a fork child gives up after this (ETIMEDOUT)") \
	X(uint, sheaf_capacity, 0, "objects per sheaf; 0 = chosen by object size (about 32 KiB, at least 32 objects or 128 KiB; 4..128)") \
	X(uint, nodes, 0, "groups of slabs and barn per cache that threads are spread over (1..64); 0 = one per CPU the process may use")

struct sheaf_opts {
#define OPT_FIELD_bool bool
#define OPT_FIELD_size size_t
#define OPT_FIELD_uint unsigned int
#define OPT_FIELD(type, name, def, help) OPT_FIELD_##type name;
	SHEAF_OPTIONS(OPT_FIELD)
#undef OPT_FIELD
};
extern struct sheaf_opts sheaf_opt;
void options_init(void);
/* Parses one SHEAF_OPTIONS string into `o`; returns the number of problems
 * reported (unknown names, bad values).  Exposed for the unit tests. */
int options_parse(struct sheaf_opts *o, const char *s, bool report);
void options_defaults(struct sheaf_opts *o);
void options_print_help(void);

/* ------------------------------------------------------------------- diag */
void diag_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int diag_snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A bad pointer given to `func`: print one line and abort (or return when
 * abort_on_error=0). */
cold void diag_bad_pointer(const char *func, const void *ptr, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
cold void diag_backtrace(void);
/* Prints recorded frames, skipping sheaf's own, at most `max`. */
cold void diag_frames(const char *indent, void *const *addrs, int depth, int max);
cold __attribute__((noreturn)) void diag_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
cold __attribute__((noreturn)) void diag_assert_fail(const char *cond, const char *file, int line);

/* ------------------------------------------------------------------ debug */
enum { DEBUG_F = 1, DEBUG_Z = 2, DEBUG_P = 4, DEBUG_U = 8 };
#define DEBUG_RZ 16                /* red zone bytes before and after */
#define DEBUG_TRACK_DEPTH 10
struct track;
struct slab;
struct sheaf_cache;
extern unsigned int sheaf_debug_flags;
void debug_init(void);
unsigned int debug_flags_for(const char *name);
size_t debug_track_bytes(uint32_t objects);
void debug_slab_init(struct sheaf_cache *c, struct slab *s);
/* slot -> the object handed out, checked and tracked. */
void *debug_on_alloc(struct sheaf_cache *c, void *slot);
void debug_on_free(struct sheaf_cache *c, struct slab *s, void *obj);
void debug_slab_consistent(struct sheaf_cache *c, struct slab *s);   /* slab_node(s)->lock held */
void debug_set_size(struct sheaf_cache *c, void *obj, size_t size);
void debug_report_double_free(struct sheaf_cache *c, struct slab *s, void *obj);

/* ------------------------------------------------------------------- page */
/* Runs of 16 KiB << order bytes for slabs, from large reserved regions. */
void *page_alloc_run(unsigned int order);
/* Gives a run back; its pages are returned to the OS (MADV_DONTNEED). */
void page_free_run(void *run, unsigned int order);
/* Whole mappings for large allocations. */
void *page_map(size_t bytes, size_t align);
void page_unmap(void *p, size_t bytes);
/* mremap(MREMAP_MAYMOVE) with accounting; NULL + ENOMEM on failure. */
void *page_remap(void *p, size_t old_bytes, size_t new_bytes);
size_t page_mapped_bytes(void);
size_t page_resident_run_bytes(void);
void page_fork_prepare(void);
void page_fork_parent(void);
void page_fork_child(void);
/* Test hook: make the next `n` mmap calls fail (fault injection). */
void page_fail_next(unsigned int n);
void page_fail_madvise_next(unsigned int n);   /* test hook: the next n madvise()s fail */
uint64_t page_madvise_failures(void);

/* ---------------------------------------------------------------- pagemap */
/*
 * Two-level radix over the 48-bit user address space, one entry per 4 KiB
 * page.  Its low 48 bits name the owner: 0 = not sheaf's, a struct slab
 * pointer, or a struct large pointer with bit 0 set.  A page of a malloc
 * size class's slab also says, in the high 16 bits, its class (plus one)
 * and its index in the slab's run: free() then finds the run's start, the
 * object's index and its marker from the entry and a small per-class table
 * (class_free_info[]), without loading the slab header.  With a few MiB of
 * small blocks freed at random the headers (64 bytes per slab) do not stay
 * in L1, and that load, which waited for the entry's, was a fifth of
 * free()'s time.  Level 1 is a 2 MiB array in .bss (zero pages cost no
 * memory until touched); level 2 leaves (2 MiB each, one per GiB of
 * address space) are mapped on first use and never freed, so a lookup can
 * never race with a leaf going away.
 */
#define PM_L2_BITS 18
#define PM_L1_BITS (48 - PAGE_SHIFT - PM_L2_BITS)
#define PM_TAG_LARGE ((uintptr_t)1)
#define PM_OWNER_MASK ((((uintptr_t)1) << 48) - 1)
#define PM_PAGE_SHIFT 48           /* 10 bits: the page's index in its run */
#define PM_PAGE_MASK  ((uintptr_t)0x3ff)
#define PM_CLASS_SHIFT 58          /* 6 bits: class + 1; 0: not a class's */
_Static_assert(NR_CLASSES < 63, "class + 1 fits the entry's 6 bits");
_Static_assert((SLAB_MIN_BYTES << SLAB_MAX_ORDER) >> PAGE_SHIFT <= PM_PAGE_MASK + 1,
	       "a run's page index fits the entry's 10 bits");
extern uintptr_t *pagemap_l1[1u << PM_L1_BITS];

/* The whole entry of addr's page (pm_owner() of it is the owner). */
static inline uintptr_t pagemap_entry(uintptr_t addr)
{
	uintptr_t i1 = addr >> (PAGE_SHIFT + PM_L2_BITS);
	if (unlikely(i1 >= (1u << PM_L1_BITS)))
		return 0;
	uintptr_t *leaf = __atomic_load_n(&pagemap_l1[i1], __ATOMIC_ACQUIRE);
	if (unlikely(!leaf))
		return 0;
	return __atomic_load_n(&leaf[(addr >> PAGE_SHIFT) & ((1u << PM_L2_BITS) - 1)],
			       __ATOMIC_RELAXED);
}
static inline uintptr_t pm_owner(uintptr_t entry)
{
	return entry & PM_OWNER_MASK;
}
/* The owner of addr's page: 0, a struct slab *, or a tagged struct large *. */
static inline uintptr_t pagemap_lookup(uintptr_t addr)
{
	return pm_owner(pagemap_entry(addr));
}
/* Sets `npages` entries from `addr` to `val`; false if a leaf could not be
 * mapped (ENOMEM). */
bool pagemap_set(uintptr_t addr, size_t npages, uintptr_t val);
/* The entries of slab `s`'s run (its owner, class and page indexes). */
bool pagemap_set_slab(const struct slab *s, size_t npages, unsigned int cls);

/* ------------------------------------------------------------------- meta */
/* Zeroed, 16-byte aligned internal memory.  Never returned to the OS. */
void *meta_alloc(size_t size);
void meta_free(void *p, size_t size);
size_t meta_mapped_bytes(void);
void meta_fork_prepare(void);
void meta_fork_parent(void);
void meta_fork_child(void);

/* ------------------------------------------------------------------- slab */
enum slab_list { SLAB_ON_FULL, SLAB_ON_PARTIAL, SLAB_ON_EMPTY };

struct slab {
	/*
	 * Read by the free fast path of every thread, written only by
	 * slab_create(): one line of its own.  The fields the slow paths
	 * write under their node's lock live in the next line, or every flush
	 * and refill on one core would evict this line from the caches of
	 * all the others that free into the slab (false sharing; it showed
	 * as poor scaling beyond 4 threads on a 16-core machine).
	 */
	uintptr_t base;            /* first object                        */
	uint64_t recip;            /* ceil(2^40 / size): index w/o division */
	uint64_t inv;              /* slab_start_index(): see there        */
	uint32_t size;             /* object stride                       */
	uint16_t cls;              /* size class, CLASS_NONE for user caches */
	uint8_t order;             /* run is SLAB_MIN_BYTES << order      */
	bool guard;                /* last page PROT_NONE (secure mode)   */
	uint32_t objects;
	uint8_t rot;               /* slab_start_index(): ctz(size)        */
	struct sheaf_cache *cache;
	uintptr_t *marks;          /* free markers, one per object (ext_marks) */
	/* Written once as well, but read by slow paths only. */
	struct track *tracks __attribute__((aligned(CACHELINE))); /* SHEAF_DEBUG=U: 2 per object */
	uintptr_t run;             /* the pages: base, or below it (secure) */
	uint8_t node;              /* cache->node[] whose lists hold it    */
	/* Under its node's lock. */
	uint32_t inuse;            /* not in the freemap                  */
	uint8_t list;              /* enum slab_list                      */
	uint32_t empty_since;      /* ms (coarse clock) it became empty    */
	struct slab *next, *prev;
	uint64_t freemap[];        /* bit set = object free in this slab  */
};

_Static_assert(offsetof(struct slab, marks) + sizeof(uintptr_t *) <= CACHELINE,
	       "the fields free()'s fast path reads share one cache line");
static inline uint32_t slab_index(const struct slab *s, uintptr_t addr)
{
	return (uint32_t)(((addr - s->base) * s->recip) >> RECIP_SHIFT);
}
static inline uint64_t slab_recip(uint32_t size)
{
	return (((uint64_t)1 << RECIP_SHIFT) + size - 1) / size;
}
/*
 * The index of the object that starts at `addr`, or a number >= s->objects
 * when none does (an interior pointer, or outside the slab, below it
 * included): free()'s two questions in one multiplication.  With the
 * stride size = m << rot, m odd, and inv = m^-1 mod 2^64, the product
 * off * inv is off / m when m divides off and above (2^64 - 1) / m when it
 * does not (multiplying by inv permutes the integers mod 2^64 and maps the
 * multiples of m onto [0, (2^64 - 1) / m]); rotating right by rot then
 * yields off / size when the low rot bits are zero, and puts a set bit at
 * the top, a number >= 2^(64 - rot), when they are not (Granlund and
 * Montgomery's exact division).  Either way a non-start lands above
 * (2^64 - 1) / size, far beyond any slab's object count.  It replaces a
 * reciprocal multiply, a multiply back and two compares.
 */
static inline uint64_t exact_index(uint64_t off, uint64_t inv, uint8_t rot)
{
	uint64_t q = off * inv;
	return (q >> rot) | (q << ((64 - rot) & 63));
}
static inline uint64_t slab_start_index(const struct slab *s, uintptr_t addr)
{
	return exact_index(addr - s->base, s->inv, s->rot);
}
/* inv and rot of slab_start_index() for a stride. */
static inline uint64_t slab_inverse(uint32_t size, uint8_t *rot)
{
	*rot = (uint8_t)__builtin_ctz(size);
	uint64_t m = size >> *rot, x = m;   /* m * m == 1 mod 8: 3 bits */
	for (int i = 0; i < 5; i++)         /* each step doubles them: 96 */
		x *= 2 - m * x;
	return x;
}
/*
 * What free()'s fast path needs to know of a malloc size class's slabs
 * (see the page map): one small table, hot in L1, where each slab's header
 * would be a load that waits for the page map's.
 */
struct class_free_info {
	uint64_t inv;              /* slab_start_index() of the stride    */
	uint32_t objects;          /* per slab                            */
	uint32_t base_off;         /* first object's offset in the run    */
	uint32_t marks_off;        /* ext_marks: the markers' offset from the
				    * slab header; 0: in the object      */
	uint32_t size;             /* stride                              */
	uint8_t rot;
} __attribute__((aligned(32)));
extern struct class_free_info class_free_info[NR_CLASSES];

/* The class of page-map entry e's page, or NR_CLASSES or more when it is
 * not a malloc size class's slab page (foreign, large, a user cache's or a
 * debugged class's slab). */
static inline uintptr_t pm_class(uintptr_t e)
{
	return (e >> PM_CLASS_SHIFT) - 1;   /* 0 - 1: ~0 */
}
/* The index of the object of class `cls` that starts at `p`, whose page's
 * entry is `e`, or a number >= class_free_info[cls].objects when none does
 * (slab_start_index() without the slab header). */
static inline uint64_t pm_class_index(uintptr_t e, uintptr_t cls, const void *p)
{
	const struct class_free_info *k = &class_free_info[cls];
	uintptr_t run = ((uintptr_t)p & ~(uintptr_t)(PAGE_SIZE - 1)) -
			(((e >> PM_PAGE_SHIFT) & PM_PAGE_MASK) << PAGE_SHIFT);
	return exact_index((uintptr_t)p - run - k->base_off, k->inv, k->rot);
}
/* obj_marker() of object `idx` (from pm_class_index()) of class `cls`: a
 * branch, not a cmov, so that the usual in-block marker load does not wait
 * for the index. */
static inline __attribute__((always_inline)) uintptr_t *
pm_class_marker(uintptr_t e, uintptr_t cls, const void *p, uint64_t idx)
{
	uintptr_t *mark = (uintptr_t *)p;
	if (unlikely(cls >= CLASS_PAGE)) {
		/* Integer arithmetic: idx may be ~2^64 (no object starts at
		 * p), and the marker is read only below it. */
		mark = (uintptr_t *)(pm_owner(e) + class_free_info[cls].marks_off + idx * sizeof(uintptr_t));
		__asm__ volatile("" : "+r"(mark));   /* no if-conversion */
	}
	return mark;
}
/* c's slab layout: c->base_off, and c's class_free_info[] entry. */
void slab_layout_init(struct sheaf_cache *c);
/* A new slab of `c` for node `node` (its lists are the caller's business). */
struct slab *slab_create(struct sheaf_cache *c, unsigned int node);
void slab_destroy(struct slab *s);
unsigned int slab_take(struct slab *s, void **out, unsigned int n);
/* Returns false (and changes nothing) if the object is already free. */
bool slab_put(struct slab *s, void *obj);
bool slab_obj_is_free(const struct slab *s, uint32_t idx);

/* ------------------------------------------------------------------ sheaf */
struct sheaf {
	uint32_t size;             /* objects[0..size) are free objects;
	                            * stale while main (pcs->size is it)   */
	uint32_t capacity;
	struct sheaf *next;        /* barn list / rcu hand-off link       */
	struct sheaf_cache *cache; /* rcu sheaves: whose objects (NULL: any) */
	bool unsettled;            /* an rcu sheaf in a barn: its objects'
	                            * markers not written yet (sheaf_settle()) */
	uint8_t node;              /* a full sheaf in a barn: its objects'
	                            * node (sheaf_node()), set by the put */
	void *objects[];
};
/* Capacity 0: the fast paths fall through to the slow path without a NULL
 * test.  Never written. */
extern struct sheaf sheaf_empty;

/* Per-thread, per-cache sheaves (the kernel's slub_percpu_sheaves). */
/* One cache line each (meta_alloc() gives 64-byte alignment): indexed by
 * a shift, never straddling two lines.  At 56 bytes the 4 KiB class's
 * entry sat where glibc's bench-malloc-simple rows ran at half speed (8 ->
 * 17 ns per call, a layout effect, most likely 4 KiB aliasing). */
struct pcs {
	struct sheaf *main;        /* its size field is stale: see `size` */
	struct sheaf *spare;       /* NULL or a sheaf                     */
	uint64_t alloc_fast;       /* thread-local counters, summed on read */
	uint64_t free_fast;
	uint64_t rcu_sheaf;        /* free_rcu_sheaf: an atomic add on the
	                            * cache's counter cost 2 updaters of one
	                            * cache a line bounce per rcu_free() */
	struct sheaf_cache *cache; /* for user caches (thread_cache->ext) */
	/* The rcu_free sheaf (rcu.c): NULL, RCU_CLAIMED while its owner
	 * pushes, or a sheaf.  Exchanged atomically, because the drain thread
	 * steals partly filled ones. */
	struct sheaf *rcu_free;
	/*
	 * main's fill and capacity live here while it is main (its own
	 * size field is stale until pcs_main_out()): malloc loads the slot
	 * straight from this line, where going through main->size put one
	 * more dependent load on every call (tcmalloc keeps its list length
	 * in the thread cache for the same reason).  A/B over all 73
	 * bench_malloc rows: 0.96x the time.  At the end of the line: the
	 * 4 KiB-class rows of bench-malloc-simple ran 3-8% slower with
	 * them next to main (a layout effect, see above).
	 */
	uint32_t size;             /* objects in main                     */
	uint32_t capacity;         /* main->capacity (0 for sheaf_empty)  */
} __attribute__((aligned(CACHELINE)));
#define RCU_CLAIMED ((struct sheaf *)1)
_Static_assert(sizeof(struct pcs) == CACHELINE, "struct pcs is one cache line");

/* main, with its size written back: what the slow paths work on. */
static inline struct sheaf *pcs_main_out(struct pcs *pcs)
{
	struct sheaf *s = pcs->main;
	if (s != &sheaf_empty)   /* sheaf_empty is shared and never written */
		s->size = pcs->size;
	return s;
}

/* Pops main's newest object; the caller has checked pcs->size != 0. */
static inline void *pcs_pop(struct pcs *pcs)
{
	uint32_t n = pcs->size - 1;
	void *p = pcs->main->objects[n];
	pcs->size = n;
	pcs->alloc_fast++;
	return p;
}

/* Pushes onto main; the caller has checked pcs->size < pcs->capacity. */
static inline void pcs_push(struct pcs *pcs, void *obj)
{
	uint32_t n = pcs->size;
	pcs->main->objects[n] = obj;
	barrier();  /* a signal handler's fork() child sees the size only after the slot */
	pcs->size = n + 1;
	pcs->free_fast++;
}

/* Makes `s` main (its size field is authoritative until now). */
static inline void pcs_set_main(struct pcs *pcs, struct sheaf *s)
{
	pcs->main = s;
	pcs->size = s->size;
	pcs->capacity = s->capacity;
}

/* ------------------------------------------------------------------- barn */
struct barn {
	sheaf_lock_t lock;
	struct sheaf *full, *empty;
	unsigned int nr_full, nr_empty;
	uint32_t over_since;       /* ms nr_full went over barn_keep_full; 0: not */
	uint32_t over_puts;        /* puts while over: the clock is read every 8th */
};

/*
 * A cache's slabs and barn for one group of threads: the kernel's struct
 * kmem_cache_node, with threads in the place of CPUs.  Each thread has a
 * home node (thread_cache->node, the least used one when it starts): its
 * sheaves are refilled from the home node's barn and slabs, and its full
 * sheaves go to the home barn, tagged with their objects' node.  So two
 * threads with different homes never get objects of the same slab handed
 * out by the barn or the slabs, and the cache lines of their blocks are not
 * shared: with one pool, the blocks of two threads that never touch each
 * other's came to share lines as sheaves travelled, and every free marker
 * written then moved a line between cores (glibc's bench-malloc-thread
 * with 2 threads ran at a fifth of its 1-thread speed on an AMD EPYC VM).
 *
 * Objects cross nodes when a thread frees another's blocks.  A thread whose
 * node has nothing left at all takes, before it makes a new slab, a full
 * sheaf from another node's barn, a sheaf of its own node's objects first
 * (a producer gets back what a consumer freed).  (Sent to the barn of their
 * objects' node instead, or taken from others only beyond their keep, the
 * sheaves a thread filled with others' blocks left nodes short while others
 * held plenty: a program whose threads free each other's blocks grew at
 * every round.)  What a node's last thread leaves serves the next thread
 * to start (the least used node is its home).
 */
struct cache_node {
	struct barn barn;
	sheaf_lock_t lock __attribute__((aligned(CACHELINE)));   /* the slab lists */
	struct slab *partial, *empty, *full;
	unsigned long nr_partial, nr_empty, nr_full;
	uint32_t decay_checked;    /* ms of the last decay walk           */
	uint64_t rnd;              /* secure: object order (slab_take)    */
} __attribute__((aligned(CACHELINE)));
#define SHEAF_MAX_NODES 64
/* The automatic barn bounds (barn_full=0, cache_setup()): full sheaves a
 * barn keeps for good, and parks for barn_decay_ms at most. */
#define BARN_KEEP_MAX 256
#define BARN_PARK_MAX 1024
extern unsigned int sheaf_nr_nodes;   /* nodes of every cache (the nodes option) */

void barn_init(struct barn *b);
struct sheaf *barn_get_full(struct sheaf_cache *c, struct cache_node *n);
struct sheaf *barn_get_empty(struct sheaf_cache *c, struct cache_node *n);
bool barn_put_full(struct sheaf_cache *c, struct cache_node *n, struct sheaf *s);
/* Puts an empty sheaf back, or frees it when the barn has enough. */
void barn_put_empty(struct sheaf_cache *c, struct cache_node *n, struct sheaf *s);
/* Exchanges an empty sheaf for a full one; NULL (and `empty` kept by the
 * caller) if the barn has no full sheaf. */
struct sheaf *barn_replace_empty_sheaf(struct sheaf_cache *c, struct cache_node *n,
				       struct sheaf *empty);
/* The same with another node's barn, for a thread whose node has no
 * object left: a sheaf of the thread's node's objects first.  Counted as
 * barn_get_remote. */
struct sheaf *barn_replace_empty_remote(struct sheaf_cache *c, struct cache_node *home,
					struct sheaf *empty);
/* Exchanges a full sheaf for an empty one (new if needed); NULL when the
 * barn is at its bound of full sheaves (then the caller keeps `full`). */
struct sheaf *barn_replace_full_sheaf(struct sheaf_cache *c, struct cache_node *n,
				      struct sheaf *full);
/* For signal handlers (rcu_free_nolock()): NULL when the lock is busy too. */
struct sheaf *barn_try_get_empty(struct sheaf_cache *c, struct cache_node *n);
/* Takes every sheaf out of every node's barn: full ones are flushed to slabs. */
void barn_drain(struct sheaf_cache *c);

/* ------------------------------------------------------------------ cache */
struct sheaf_cache {
	/* Read-mostly. */
	uint32_t size;             /* stride                              */
	uint32_t object_size;      /* as created / usable size            */
	uint32_t align;
	uint32_t marker_off;       /* where the free marker lives         */
	bool ext_marks;            /* ... or in slab->marks (obj_marker()) */
	uint32_t sheaf_capacity;   /* 0: no sheaves                       */
	uint32_t objects_per_slab;
	uint32_t barn_max_full;    /* bound of barn.full                  */
	uint32_t barn_keep_full;   /* what it keeps beyond barn_decay_ms  */
	uint16_t cls;              /* size class or CLASS_NONE            */
	uint8_t slab_order;
	uint8_t debug;             /* SHEAF_DEBUG flags (debug.c)         */
	bool guard;                /* secure: slabs end in a guard page   */
	uint32_t obj_offset;       /* object start within its slot: red zone */
	uint32_t base_off;         /* first slot's offset in a slab's run */
	unsigned int id;           /* index into thread_cache->ext       */
	unsigned int flags;
	void (*ctor)(void *);
	uint64_t recip;
	char name[32];
	struct cache_node *node;   /* sheaf_nr_nodes of them              */

	uint64_t stat[SHEAF_NR_STATS] __attribute__((aligned(CACHELINE))); /* atomic adds */
	struct sheaf_cache *next_cache;
};

extern uint64_t sheaf_free_key;   /* per-process secret for free markers */
static inline uintptr_t free_marker(const void *p)
{
	return sheaf_free_key ^ (uintptr_t)p;
}
/*
 * The fast paths' marker test: whether `mark` may hold p's marker, by its
 * most significant byte alone; the slow paths compare the whole word.  A
 * one-byte load is forwarded from the program's last store to the word
 * whatever that store's width; a word load after a narrower store (a
 * program that sets a block's first byte and frees it) waits until the
 * store has reached the cache: 5.9 -> 4.3 ns per malloc/free pair of 8 to
 * 256 bytes on an AMD EPYC (Zen 5) VM, tcmalloc 4.1.  make_key() puts that
 * byte in 0xf8..0xfe, values no pointer, small or negative integer, ASCII
 * or UTF-8 text has there, so a live block takes the slow path by chance
 * only if it holds other binary data.
 */
static inline bool marker_maybe_free(const uintptr_t *mark, const void *p)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const unsigned int top = sizeof(uintptr_t) - 1;
#else
	const unsigned int top = 0;
#endif
	return ((const uint8_t *)mark)[top] == (uint8_t)(free_marker(p) >> 56);
}
/*
 * Pointers stored inside free objects (the deferred lists of nolock.c and
 * rcu.c's fallback list) are encoded like SLUB's hardened freelist
 * pointers: XOR'ed with the per-process secret and the byte-swapped
 * address they are stored at.  An overflow from a neighbouring block then
 * cannot plant a pointer that decodes to an address of its choosing, and a
 * corrupted link decodes to garbage that the page map rejects.
 */
static inline uintptr_t link_encode(const void *where, const void *ptr)
{
	return (uintptr_t)ptr ^ sheaf_free_key ^ __builtin_bswap64((uintptr_t)where);
}
static inline void *link_decode(const void *where, uintptr_t v)
{
	return (void *)(v ^ sheaf_free_key ^ __builtin_bswap64((uintptr_t)where));
}

/*
 * Where an object's free marker lives: a word in the object, or, for
 * objects of a page or more (cache->ext_marks), a word in the slab's marks
 * array beside its header.  A program may free a big block it never wrote
 * (a buffer sized for the worst case); a marker in the block would make
 * its page resident just to say that it is free.
 */
static inline uintptr_t *slab_marker(const void *p)
{
	const struct slab *s = (const struct slab *)pagemap_lookup((uintptr_t)p);
	sheaf_assert(s);   /* p is a live or just-freed object of a slab */
	return &s->marks[slab_index(s, (uintptr_t)p)];
}
static inline uintptr_t *obj_marker(const struct sheaf_cache *c, const void *p)
{
	return c->ext_marks ? slab_marker(p) : (uintptr_t *)((uintptr_t)p + c->marker_off);
}
static inline void obj_mark_free(const struct sheaf_cache *c, void *p)
{
	if (config_harden)
		*obj_marker(c, p) = free_marker(p);
}
static inline void obj_mark_alloc(const struct sheaf_cache *c, void *p)
{
	if (config_harden)
		*obj_marker(c, p) = 0;
}
static inline bool obj_marked_free(const struct sheaf_cache *c, const void *p)
{
	return config_harden && *obj_marker(c, p) == free_marker(p);
}

static inline void stat_add(struct sheaf_cache *c, enum sheaf_stat_item i, uint64_t n)
{
	__atomic_fetch_add(&c->stat[i], n, __ATOMIC_RELAXED);
}
#define stat(c, item) stat_add((c), SHEAF_STAT_##item, 1)

/* `nodes`: sheaf_nr_nodes nodes, or NULL to allocate them with the cache
 * (meta_alloc(cache_alloc_size()), user caches). */
int cache_setup(struct sheaf_cache *c, struct cache_node *nodes, const char *name, size_t size,
		size_t align, unsigned int flags, void (*ctor)(void *), int cls);
size_t cache_alloc_size(void);
/* Bulk on the slabs of node `n` (its lock taken inside): partial slabs
 * first, then empty ones, then (`grow`) new ones.  Returns objects
 * obtained. */
unsigned int cache_alloc_from_slabs(struct sheaf_cache *c, struct cache_node *n, void **out,
				    unsigned int count, bool grow);
/* Objects must already be validated as belonging to `c`; each goes back to
 * its own slab, whatever the node.  Double frees found by the freemap are
 * diagnosed and skipped. */
void cache_free_to_slabs(struct sheaf_cache *c, void **objs, unsigned int n);
/* Returns every empty slab beyond `keep` to the page source (malloc_trim). */
bool cache_shrink(struct sheaf_cache *c, unsigned long keep);
/* Bytes of empty slabs held by all caches. */
size_t cache_retained_bytes(void);
/* Every cache, kmalloc classes first. */
void caches_foreach(void (*fn)(struct sheaf_cache *c, void *arg), void *arg);
void caches_fork_prepare(void);
void caches_fork_parent(void);
void caches_fork_child(void);
extern sheaf_lock_t caches_lock;

/* Resolves `ptr` for a free by `func`: returns its slab, or NULL after a
 * diagnostic (not ours, interior, double free). Large pointers are handled
 * by the caller (entry tagged PM_TAG_LARGE). */
struct slab *cache_check_free(const char *func, uintptr_t entry, void *ptr);

/* -------------------------------------------------------------- sizeclass */
extern struct sheaf_cache kmalloc_caches[NR_CLASSES];
extern const uint32_t class_size[NR_CLASSES];
extern const uint8_t class_small_index[(1024 >> 3) + 1];
extern uint8_t class_aligned[NR_CLASSES][PAGE_SHIFT + 1];

static inline unsigned int size_to_class(size_t size)
{
	if (size <= 1024)
		return class_small_index[(size + 7) >> 3];
	size_t s = size - 1;
	unsigned int e = 63u - (unsigned int)__builtin_clzl(s);
	return 9 + (e - 7) * 4 + (unsigned int)((s >> (e - 2)) & 3);
}
void sizeclass_init(void);

/* ------------------------------------------------------------------ large */
struct large {
	uintptr_t base;            /* mapping                             */
	size_t map_bytes;
	uintptr_t user;            /* pointer handed out                  */
	size_t req;                /* size last asked for (alloc/realloc) */
	uint32_t state;            /* LARGE_LIVE or LARGE_CACHED          */
	uint32_t guard;            /* bytes of PROT_NONE at the end (secure) */
	uint32_t cached_ms;        /* when it entered the cache (decay)   */
	uint32_t bin;              /* its size bin while cached           */
	struct large *next, *prev; /* cache: all, most recent first (LRU) */
	struct large *bnext, *bprev; /* cache: its size bin, most recent first */
};
enum {
	LARGE_LIVE = 0x4c495645,
	LARGE_CACHED = 0x43414348,
	LARGE_DEFERRED = 0x44454645,
	LARGE_SLOT = 0x534c4f54,   /* freed, held by its thread (large_slot) */
};
static inline size_t large_usable(const struct large *l)
{
	return l->map_bytes - l->guard - (l->user - l->base);
}
void *large_alloc(size_t size, size_t align, bool zero);
enum { LA_GROW = 1, LA_CACHED_ONLY = 2 };   /* large_alloc_ex() `how` */
void *large_alloc_ex(size_t size, size_t align, bool zero, unsigned int how);
void large_free(struct large *l);
struct thread_cache;
/* The per-thread slot (large.c; pop and push below struct thread_cache).
 * Only the owning thread calls these (release: also its exit). */
void large_slot_evict(struct large *l);
void large_slot_release(struct thread_cache *tc);
void large_slot_orphan(struct thread_cache *tc);
void *large_realloc(struct large *l, size_t size);
bool large_trim(void);
void large_stats(size_t *live, size_t *live_bytes, size_t *cached_bytes,
		 uint64_t *allocs, uint64_t *frees);
void large_fork_prepare(void);
void large_fork_parent(void);
void large_fork_child(void);

/* --------------------------------------------------------------- valgrind */
/*
 * Under valgrind (memcheck started with --soname-synonyms=somalloc=
 * nouserintercepts, so that sheaf rather than valgrind's malloc runs),
 * threads get no per-thread state: every allocation and free takes the
 * slow path, and that is where memcheck is told about blocks
 * (MALLOCLIKE/FREELIKE: freed memory becomes NOACCESS, leaks are
 * reported).  The fast paths stay free of client requests.
 */
extern int sheaf_on_valgrind;     /* under valgrind and telling memcheck */
extern int sheaf_under_valgrind;  /* under valgrind at all */
void vg_alloc(const void *p, size_t size, bool zeroed);
void vg_free(const void *p);
/* A reused run of pages: no longer the freed blocks memcheck remembers. */
void vg_fresh(const void *p, size_t size);

/* ------------------------------------------------------------------- prof */
extern int sheaf_prof_on;
void prof_init(void);
void prof_alloc(const void *p, size_t size);
void prof_free(const void *p);
void prof_report(void);

/* ----------------------------------------------------------------- thread */
struct thread_cache {
	/* Signal handlers never touch main/spare (nolock.c): they use a
	 * stash sheaf per size class that only they pop and push, refilled by
	 * this thread's own slow paths.  So the fast paths carry no flag. */
	unsigned int busy;           /* ext array being replaced (rcu_free_nolock) */
	unsigned int nolock_depth;   /* handlers inside a *_nolock() call   */
	unsigned int nolock_refill;  /* this thread is refilling the stashes */
	uint64_t nolock_want;        /* classes whose stash ran dry (bits)  */
	uint64_t rcu_want;           /* classes whose rcu slot rcu_free_nolock()
	                              * left empty (rcu_provision()); atomic */
	struct sheaf *nolock[NR_CLASSES];
	struct pcs pcs[NR_CLASSES];  /* malloc size classes               */
	struct pcs *ext;             /* user caches, by cache->id         */
	unsigned int nr_ext;
	unsigned int dead;
	unsigned int node;           /* home node of every cache (cache_node) */
	bool counted;                /* in the node's thread count: not a
	                              * background thread of ours */
	/* rcu.c: a pointer array for objects without an rcu sheaf (large
	 * ones, caches without sheaves), same protocol as pcs->rcu_free; and
	 * whether any rcu sheaf of this thread is partly filled. */
	struct sheaf *rcu_array;
	int rcu_dirty;
	/* large.c: the thread's last freed large block (LARGE_SLOT), for
	 * its next large malloc without the large lock; and what went
	 * through it, which stats add to the shared counters. */
	struct large *large_slot;
	size_t large_slot_bytes;
	uint64_t large_slot_allocs, large_slot_frees;
	/* malloc.c: the block the thread's last growing realloc() returned:
	 * growing it again earns headroom (realloc_size()). */
	void *grown;
	struct thread_cache *next, *prev;
};

/* The thread's large slot (large.c): free keeps the block for the thread's
 * next large malloc/calloc that it fits (at most twice as big): no lock,
 * no list.  No valgrind hooks: a thread has no state under valgrind. */
static inline void large_slot_set(struct thread_cache *tc, struct large *l)
{
	tc->large_slot = l;
	__atomic_store_n(&tc->large_slot_bytes, l ? l->map_bytes : 0, __ATOMIC_RELAXED);
}

/*
 * Whether a freed mapping with `have` usable bytes may serve `bytes` (page
 * rounded): at most twice that, as for any allocation; a growing realloc
 * takes a bigger one, which the block will likely grow into in place, but
 * only up to 8x or LARGE_GROW_TAKE, so that a block that stops growing does
 * not pin the touched pages of a much bigger mapping.
 */
#define LARGE_GROW_TAKE ((size_t)1 << 20)
static inline bool large_fits(size_t have, size_t bytes, bool grow)
{
	if (have < bytes)
		return false;
	return have - bytes <= bytes || (grow && (have <= LARGE_GROW_TAKE || have / 8 <= bytes));
}

/* size: at most PTRDIFF_MAX (above SMALL_MAX but for a growing realloc's
 * move to a mapping).  grow: for a realloc that grows a block, which may
 * take a bigger block (large_fits()). */
static inline void *large_slot_pop(struct thread_cache *tc, size_t size, bool grow)
{
	struct large *l = tc->large_slot;
	if (!l)
		return NULL;
	size_t bytes = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	size_t have = l->map_bytes - l->guard;
	if (!large_fits(have, bytes, grow))
		return NULL;
	large_slot_set(tc, NULL);
	__atomic_store_n(&tc->large_slot_allocs, tc->large_slot_allocs + 1, __ATOMIC_RELAXED);
	l->state = LARGE_LIVE;
	l->req = size;
	return (void *)l->user;
}

/* l: live, checked by the caller.  False: not one for the slot. */
static inline bool large_slot_push(struct thread_cache *tc, struct large *l)
{
	if (config_tiny || l->user != l->base || l->map_bytes - l->guard > sheaf_opt.large_thread ||
	    tc->dead)
		return false;   /* tiny builds keep nothing per thread */
	struct large *old = tc->large_slot;
	l->state = LARGE_SLOT;
	large_slot_set(tc, l);
	__atomic_store_n(&tc->large_slot_frees, tc->large_slot_frees + 1, __ATOMIC_RELAXED);
	if (old)
		large_slot_evict(old);
	return true;
}

/* Initial-exec and one pointer: safe for a library loaded by LD_PRELOAD and
 * for programs that dlopen() more TLS-using libraries later. */
extern __thread struct thread_cache *sheaf_tc __attribute__((tls_model("initial-exec")));
extern int sheaf_ready;
void sheaf_init(void);
/* The calling thread's state, created on first use; NULL while the thread
 * is exiting (or during bootstrap): then callers go to the slabs directly. */
struct thread_cache *thread_cache_get(void);

/* The calling thread is one of the library's own (the rcu drain thread):
 * its home is node 0, and it does not count as a user of it, so that the
 * program's threads spread over the nodes as if it were not there. */
void thread_set_background(void);

/* The calling thread's home node of `c` (node 0 for threads without
 * state, and for exiting ones). */
static inline struct cache_node *cache_home(struct sheaf_cache *c)
{
	struct thread_cache *tc = sheaf_tc;
	return &c->node[tc ? tc->node : 0];
}
/* The node whose lists hold slab `s` (its lock guards the freemap). */
static inline struct cache_node *slab_node(const struct slab *s)
{
	return &s->cache->node[s->node];
}
/* The node of a sheaf's objects, by its first one: a full sheaf's tag in a
 * barn (another node's thread takes back its own objects), and where an
 * rcu sheaf goes after its grace period. */
struct cache_node *sheaf_node(struct sheaf_cache *c, const struct sheaf *s);
/* The pcs of a user cache in `tc`, grown on demand; NULL on ENOMEM. */
struct pcs *thread_ext_pcs(struct thread_cache *tc, struct sheaf_cache *c);
/* Calls fn on every live thread cache under threads_lock. */
void threads_foreach(void (*fn)(struct thread_cache *tc, void *arg), void *arg);
unsigned long threads_count(void);
unsigned int cache_id_alloc(void);
void cache_id_free(unsigned int id);
/* Flushes one pcs completely (thread exit, trim, destroy): full sheaves to
 * the barn of their objects' node, empty ones to node `home`'s. */
void pcs_drain(struct sheaf_cache *c, struct pcs *pcs, struct cache_node *home);
/* Adds the thread-local counters of `pcs` to the cache's and zeroes them. */
void pcs_fold_counters(struct sheaf_cache *c, struct pcs *pcs);

/* ------------------------------------------------------------------ sheaf */
void *sheaf_alloc_slow(struct sheaf_cache *c, struct pcs *pcs);
void sheaf_free_slow(struct sheaf_cache *c, struct pcs *pcs, void *obj);
struct sheaf *sheaf_new(struct sheaf_cache *c);
void sheaf_delete(struct sheaf *s);
/* Flushes every object of `s` to the slabs; `s` is empty afterwards. */
void sheaf_flush(struct sheaf_cache *c, struct sheaf *s);
/*
 * An rcu sheaf whose grace period ended goes to a barn as it is: the drain
 * thread does not write its objects' free markers, the thread that takes
 * it does, here (also before a flush).  Drops the objects found marked
 * free already (a double free: diagnosed, counted in free_invalid, taken
 * off free_slow); returns how many.  Nothing for a settled sheaf.
 */
unsigned int sheaf_settle(struct sheaf_cache *c, struct sheaf *s);

/* Allocation and free on a cache with everything but the inline fast path
 * (the slow paths of both the malloc family and the cache API). */
void *cache_alloc_any(struct sheaf_cache *c);
void cache_free_any(struct sheaf_cache *c, void *obj);

/* ----------------------------------------------------------------- nolock */
/* Frees deferred by signal handlers (sheaf_free_nolock() that could not
 * use a sheaf): marked free and linked through the word after the marker
 * (nolock.c). */
extern void *nolock_deferred;
extern int rcu_start_pending;           /* rcu.c: a handler queued work, no drain thread */
extern unsigned int nolock_slots_used;   /* nolock.c: frees parked in the slot array */
/* Refills the stashes handlers asked for (thread's own slow paths). */
void nolock_refill(struct thread_cache *tc);
void rcu_provision(struct thread_cache *tc);
/* Gives the stashes back (thread exit). */
void nolock_release(struct thread_cache *tc);
void nolock_process(void);
void rcu_nolock_poll(void);
static inline void nolock_poll(void)
{
	if (unlikely(__atomic_load_n(&nolock_deferred, __ATOMIC_RELAXED) ||
		     __atomic_load_n(&nolock_slots_used, __ATOMIC_RELAXED)))
		nolock_process();
	if (unlikely(__atomic_load_n(&rcu_start_pending, __ATOMIC_RELAXED)))
		rcu_nolock_poll();
}
/* Test hook: called at points inside the slow paths (points below), so
 * that tests can raise a signal while locks or claims are held. */
enum { HOOK_ALLOC_SLOW, HOOK_FREE_SLOW, HOOK_BARN_LOCKED, HOOK_SLABS_LOCKED, HOOK_RCU_CLAIMED,
       HOOK_LARGE_LOCKED };
extern void (*sheaf_test_hook)(int point);
static inline void test_hook(int point)
{
	if (unlikely(sheaf_test_hook != NULL))
		sheaf_test_hook(point);
}

/* -------------------------------------------------------------------- rcu */
void rcu_thread_exit(struct thread_cache *tc);   /* threads_lock held */
void rcu_fork_child_begin(void);  /* before orphaned threads are released */
void rcu_fork_child(void);
void rcu_stats(uint64_t *gps, uint64_t *objects, uint64_t *pending, uint64_t *fallback);
/* Frees an object whose start is known (drain paths, tiny callbacks). */
void rcu_free_now(void *obj);

/* ------------------------------------------------------------------- zero */
/* Picks how zero_block() clears (sheaf_init()): zero_vec, AVX2 stores for
 * mid-sized blocks (test_zero sets it to check both ways). */
void zero_init(void);
extern bool zero_vec;
/* Zeroes exactly n bytes of a block calloc() hands out. */
void zero_block(void *p, size_t n);
/* `n` objects counted as freed after their grace period were double frees
 * (sheaf_settle() found them): rcu_objects_freed counts them out again. */
void rcu_note_duplicates(unsigned int n);

/* ------------------------------------------------------------------ stats */
void stats_cache_snapshot(struct sheaf_cache *c, struct sheaf_cache_stats *st);
void stats_init(void);
void stats_at_exit(void);

#pragma GCC visibility pop

#endif /* SHEAF_INTERNAL_H */
