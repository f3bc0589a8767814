/*
 * tsan_urcu.c - tells ThreadSanitizer what a QSBR grace period guarantees.
 *
 * liburcu-qsbr orders a reader's accesses before a later synchronize_rcu()
 * with its own barriers and futexes inside the (uninstrumented) shared
 * library, which TSan cannot see: it would report sheaf reusing an
 * rcu_free()'d object after a grace period - the very thing that is safe -
 * as a race with the readers that read it before.  tests/sanitize/run.sh
 * links the TSan builds with
 *   -Wl,--wrap=urcu_qsbr_quiescent_state,--wrap=urcu_qsbr_thread_offline,
 *   --wrap=urcu_qsbr_unregister_thread,--wrap=urcu_qsbr_synchronize_rcu
 * so that every quiescent state (explicit, going offline, unregistering)
 * releases one global sync token and every synchronize_rcu() acquires it
 * once it returns.  That is the QSBR guarantee: what a reader did before
 * its quiescent state happens before whatever follows a grace period that
 * it ended.  (It also orders quiescent states that a grace period did not
 * wait for, which can only hide a race, never invent one.)
 *
 * Calls made inside liburcu itself (its call_rcu worker) are not wrapped;
 * sheaf calls urcu_qsbr_synchronize_rcu() directly (lib/rcu.c).
 */
#include <sanitizer/tsan_interface.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

void __real_urcu_qsbr_quiescent_state(void);
void __real_urcu_qsbr_thread_offline(void);
void __real_urcu_qsbr_unregister_thread(void);
void __real_urcu_qsbr_synchronize_rcu(void);
void __wrap_urcu_qsbr_quiescent_state(void);
void __wrap_urcu_qsbr_thread_offline(void);
void __wrap_urcu_qsbr_unregister_thread(void);
void __wrap_urcu_qsbr_synchronize_rcu(void);

static char grace_period;   /* the sync token: only its address matters */

void __wrap_urcu_qsbr_quiescent_state(void)
{
	__tsan_release(&grace_period);
	__real_urcu_qsbr_quiescent_state();
}

void __wrap_urcu_qsbr_thread_offline(void)
{
	__tsan_release(&grace_period);
	__real_urcu_qsbr_thread_offline();
}

void __wrap_urcu_qsbr_unregister_thread(void)
{
	__tsan_release(&grace_period);
	__real_urcu_qsbr_unregister_thread();
}

void __wrap_urcu_qsbr_synchronize_rcu(void)
{
	__real_urcu_qsbr_synchronize_rcu();
	__tsan_acquire(&grace_period);
}

/*
 * test_rcu_safety checks its own readers by re-executing itself with
 * SHEAF_RCU_SELFTEST_EARLY=1 or 2, where the writers free() objects while
 * readers may hold them - races on purpose, which TSan rightly reports and
 * which would turn the child's exit status into 66.  In those children only,
 * TSan reports nothing (the parent checks that the readers saw the damage).
 * TSAN_OPTIONS from the environment still take precedence.
 */
#if defined(__clang__)
#define NOT_INSTRUMENTED __attribute__((disable_sanitizer_instrumentation))
#else
#define NOT_INSTRUMENTED __attribute__((no_sanitize_thread, no_instrument_function))
#endif
const char *__tsan_default_options(void);
/*
 * Runs inside TSan's initialisation, before libc has set `environ`: reads
 * /proc/self/environ with raw system calls, and is not instrumented.
 */
NOT_INSTRUMENTED const char *__tsan_default_options(void)
{
	static char env[65536];
	static const char name[] = "SHEAF_RCU_SELFTEST_EARLY=";
	long fd = syscall(SYS_openat, AT_FDCWD, "/proc/self/environ", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return "";
	long n = syscall(SYS_read, fd, env, sizeof(env) - 1);
	syscall(SYS_close, fd);
	for (long i = 0; i < n; i++) {
		size_t k = 0;
		while (name[k] && i + (long)k < n && env[i + k] == name[k])
			k++;
		if (!name[k])
			return "report_bugs=0";
		while (i < n && env[i])   /* to the end of this variable */
			i++;
	}
	return "";
}
