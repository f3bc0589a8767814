/*
 * tsan_urcu.h - liburcu's pointer primitives in a form ThreadSanitizer sees
 * (force-included by tests/sanitize/run.sh into the TSan builds only, after
 * sheaf_names.h).
 *
 * Without _LGPL_SOURCE, rcu_dereference() and rcu_assign_pointer() are calls
 * into liburcu-qsbr.so, which is not instrumented: TSan sees neither the
 * publishing store nor the reading load, hence no happens-before from a
 * writer's initialisation of an object to a reader's use of it, and reports
 * that as a race.  Here they become the C11 atomics they stand for (a
 * release store, an acquire load - TSan treats liburcu's consume the same),
 * so that TSan checks the test's and sheaf's own accesses and nothing else.
 *
 * The other half - "everything a reader did before its quiescent state
 * happens before what follows synchronize_rcu()" - lives in the library and
 * is modelled by tsan_urcu.c, linked with -Wl,--wrap for the liburcu entry
 * points that sheaf and the tests call.
 */
#ifndef SHEAF_SANITIZE_TSAN_URCU_H
#define SHEAF_SANITIZE_TSAN_URCU_H

#include <urcu-qsbr.h>

#undef rcu_dereference
#define rcu_dereference(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#undef rcu_set_pointer
#define rcu_set_pointer(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#undef rcu_xchg_pointer
#define rcu_xchg_pointer(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#undef rcu_cmpxchg_pointer
#define rcu_cmpxchg_pointer(p, old, _new)                                              \
	__extension__({                                                                \
		__typeof__(*(p)) sheaf_tsan_old_ = (old);                              \
		__atomic_compare_exchange_n((p), &sheaf_tsan_old_, (_new), 0,          \
					    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);       \
		sheaf_tsan_old_;                                                       \
	})
/* rcu_assign_pointer(p, v) is rcu_set_pointer((&p), (v)): follows. */

#endif
