/*
 * lock.c - the contended half of sheaf_lock_t (see internal.h).
 *
 * Critical sections are short (a few list operations, or one bulk move of a
 * sheaf), so a contended locker first spins briefly: on 2+ cores the holder
 * usually finishes within that time and a futex sleep/wake pair (two system
 * calls) is avoided.  Then it marks the lock contended (2) and sleeps.
 */
#include "internal.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LOCK_SPINS 100

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

void lock_acquire_slow(sheaf_lock_t *l)
{
	for (int i = 0; i < LOCK_SPINS; i++) {
		cpu_relax();
		if (__atomic_load_n(&l->v, __ATOMIC_RELAXED) == 0 && lock_try(l))
			return;
	}
	/* From here on we may sleep: say so by storing 2, so that the
	 * holder's release wakes us. */
	while (__atomic_exchange_n(&l->v, 2, __ATOMIC_ACQUIRE) != 0)
		syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
}

void lock_wake(sheaf_lock_t *l)
{
	syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}
