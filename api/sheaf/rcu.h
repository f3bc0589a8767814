/*
 * sheaf/rcu.h - free objects after an RCU grace period (the kernel's
 * kfree_rcu()), on liburcu's QSBR flavour.
 *
 *     struct node {
 *             struct node *next;
 *             int key;
 *             struct rcu_ptr rp;      // 8 bytes; or a struct rcu_head (16)
 *     };
 *     ...
 *     rcu_assign_pointer(prev->next, victim->next);   // unpublish
 *     rcu_free(victim, rp);                           // free after a grace period
 *
 * An object passed to rcu_free() stays intact until every RCU reader that
 * could have seen it has finished: with QSBR, until every *registered,
 * online* thread (rcu_register_thread()) has passed a quiescent state
 * (rcu_quiescent_state(), rcu_thread_offline(), or unregistering).  A
 * registered thread that stays online without ever reporting one stalls
 * every grace period, and with it the freeing of all rcu_free()'d memory.
 *
 * How: rcu_free() only stores the object pointer in the calling thread's
 * rcu_free sheaf for the object's cache (nothing is written into the
 * object, and no function pointer is stored).  A full sheaf is handed to
 * sheaf's background drain thread, which waits for one grace period per
 * collected batch of sheaves and then gives each sheaf to the cache's barn
 * as a full sheaf, ready to serve allocations.  Objects without a sheaf
 * (large allocations, caches without sheaves) go into per-thread pointer
 * arrays handed off the same way; with no memory even for those, they are
 * linked through their rcu_head/rcu_ptr field, and their start is
 * recomputed from the field address, so the field may sit at any offset.
 * Partly filled sheaves are collected after a delay (SHEAF_OPTIONS
 * rcu_delay_ms, default 30 ms) or when many objects are pending.  The drain
 * thread starts on the first deferred free, never in pure malloc use, and
 * sleeps when there is nothing to do.
 *
 * Works from any thread, registered with liburcu or not.
 *
 * After fork() without exec, the child's liburcu registry still lists the
 * parent's other registered threads.  liburcu's rule is that threads are
 * unregistered before such a fork; then the child's grace periods work.  A
 * thread that was merely offline works too if the child starts no thread
 * of its own (glibc would reuse that thread's stack, and its TLS holds the
 * registry node).  A thread online at fork() means grace periods never end
 * in the child.  Either way rcu_free() in a child never blocks and never
 * frees early: objects whose grace period cannot end are never freed, and
 * rcu_free_barrier() gives up after SHEAF_OPTIONS rcu_fork_barrier_ms
 * (returns -1, ETIMEDOUT).  malloc and free are unaffected.
 *
 * Link with $(pkg-config --libs sheaf): liburcu-qsbr must be the shared
 * library, or its registry would be a second one that sheaf cannot see.
 */
#ifndef SHEAF_RCU_H
#define SHEAF_RCU_H

#include <stddef.h>
/* liburcu's QSBR flavour with its short names (rcu_read_lock(),
 * rcu_quiescent_state(), struct rcu_head ...): sheaf's grace periods are
 * QSBR grace periods, so its users are QSBR users. */
#include <urcu-qsbr.h>

#include "sheaf.h"
#include "sheaf/features.h"   /* generated: SHEAF_RCU_TINY in --enable-tiny builds */

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The compact field for rcu_free(): one pointer.  (In a --enable-tiny build
 * rcu_free() is one call_rcu() per object and struct rcu_ptr is a struct
 * rcu_head; use SHEAF_RCU_PTR_SIZE, not 8, if it matters.)
 */
#ifndef SHEAF_RCU_TINY
struct rcu_ptr {
	void *next;
};
#else
struct rcu_ptr {
	struct rcu_head head;
};
#endif
#define SHEAF_RCU_PTR_SIZE sizeof(struct rcu_ptr)

/* The implementation behind the macros; call these only through them. */
SHEAF_API void sheaf_rcu_free_field(void *obj, void *field, const char *func);
SHEAF_API void sheaf_rcu_free_nofield(void *obj);
SHEAF_API void sheaf_rcu_free_nolock_field(void *obj, void *field);

#define SHEAF_RCU_FIELD_CHECK(ptr, field)                                               \
	_Static_assert(_Generic(&(ptr)->field, struct rcu_head *: 1, struct rcu_ptr *: 1, \
				default: 0),                                             \
		       "rcu_free(): the field must be a struct rcu_head or a struct rcu_ptr")

/*
 * rcu_free(ptr, field) - free `ptr` after an RCU grace period.
 * `field` names a member of *ptr of type struct rcu_head or struct rcu_ptr
 * (any other type does not compile).  `ptr` may come from malloc (any size),
 * a sheaf slab cache or sheaf_malloc; NULL is a no-op.  A pointer sheaf did
 * not hand out, or not the start of a live object, is diagnosed like a bad
 * free().  Neither `ptr` nor the object may be used by the caller afterwards
 * (readers that found it before it was unpublished may keep reading).
 *
 * Thread-safe, callable from any thread (registered or not) and inside a
 * read-side critical section; never waits for a grace period.  May take
 * internal locks briefly and allocate a sheaf: not async-signal-safe (see
 * rcu_free_nolock()).
 */
#define rcu_free(ptr, field)                                                            \
	do {                                                                            \
		__typeof__(ptr) sheaf_rcu_p_ = (ptr);                                   \
		SHEAF_RCU_FIELD_CHECK(sheaf_rcu_p_, field);                             \
		if (sheaf_rcu_p_)                                                       \
			sheaf_rcu_free_field(sheaf_rcu_p_, &sheaf_rcu_p_->field,        \
					     "rcu_free()");                             \
	} while (0)

/*
 * rcu_free_nolock(ptr, field) - rcu_free() for signal handlers (there is no
 * one-argument form: nothing can be waited for there).  Async-signal-safe:
 * callable from a handler that interrupted anything, sheaf's malloc, free,
 * rcu_free() and rcu_free_nolock() included; it never blocks, allocates,
 * takes a lock or calls call_rcu().  Uses the thread's rcu_free sheaf when
 * the interrupted code is not using it and it has room, else an empty sheaf
 * that the barn or the thread's own next malloc/free slow path provides,
 * else links the object through `field` for the drain thread.  Outside a
 * handler it costs about what rcu_free() does.  The object still waits a
 * full grace period, and rcu_free_barrier() waits for it too.
 */
#define rcu_free_nolock(ptr, field)                                                     \
	do {                                                                            \
		__typeof__(ptr) sheaf_rcu_p_ = (ptr);                                   \
		SHEAF_RCU_FIELD_CHECK(sheaf_rcu_p_, field);                             \
		if (sheaf_rcu_p_)                                                       \
			sheaf_rcu_free_nolock_field(sheaf_rcu_p_, &sheaf_rcu_p_->field); \
	} while (0)

/*
 * rcu_free_mightsleep(ptr) - free `ptr` after a grace period, without a
 * field in the object.  Batched through pointer arrays like rcu_free(); only
 * when no memory for an array can be had (and always in a --enable-tiny
 * build) does it wait for a grace period itself (synchronize_rcu), so it
 * must not be called from inside an RCU read-side critical section.  A
 * registered thread that waits is offline meanwhile: that is a quiescent
 * state, and its earlier rcu_free()s may complete.  Thread-safe; may block.
 */
#define rcu_free_mightsleep(ptr) sheaf_rcu_free_nofield(ptr)

/*
 * rcu_free_barrier() - when it returns, every object rcu_free()'d before the
 * call (by any thread, including objects in other threads' partly filled
 * sheaves) has been freed.  Waits for a grace period: must not be called
 * from inside a read-side critical section or a signal handler.  Returns 0,
 * or -1 with errno ETIMEDOUT in a fork child whose grace periods cannot end.
 * Thread-safe; blocks.
 */
SHEAF_API int rcu_free_barrier(void);

/*
 * sheaf_cache_rcu_barrier(cache) - the same for the objects of one cache.
 * Its cost grows with the number of threads, not with caches x threads.
 * sheaf_cache_destroy() calls it.  Thread-safe; blocks.
 */
SHEAF_API int sheaf_cache_rcu_barrier(struct sheaf_cache *cache);

#ifdef __cplusplus
}
#endif
#endif /* SHEAF_RCU_H */
