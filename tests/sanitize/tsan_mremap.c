/*
 * tsan_mremap.c - mremap() in a form ThreadSanitizer follows (TSan builds
 * only: tests/sanitize/run.sh links them with -Wl,--wrap=mremap).
 *
 * sheaf grows large blocks with mremap(MREMAP_MAYMOVE) (lib/page.c).  TSan
 * intercepts mmap and munmap but not mremap, so when the kernel moves a
 * mapping, TSan still holds the old range's access history; when that range
 * is mapped again for another thread's block, TSan reports the new owner's
 * writes as racing with the old owner's reads - accesses that the kernel's
 * own ordering of the mappings separates.  Here mremap(MREMAP_MAYMOVE) is
 * done with what TSan does see: growing maps a new range, copies and unmaps
 * the old one (always a move, which MREMAP_MAYMOVE permits), shrinking
 * unmaps the tail.  Any other use goes to the real mremap.
 *
 * What it looks like without this file: test_thread_churn, about once in
 * eight runs, reports a "data race" between fill() just after one
 * worker's realloc() of a large block and verify() just before another
 * worker's realloc(), at the same address: two real mremap() moves, the
 * second into the range that the first one vacated.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

void *__real_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);
void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);

void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
	if (flags != MREMAP_MAYMOVE) {
		va_list ap;
		va_start(ap, flags);
		void *fixed = va_arg(ap, void *);
		va_end(ap);
		return __real_mremap(old, old_size, new_size, flags, fixed);
	}
	if (new_size <= old_size) {
		if (new_size < old_size && munmap((char *)old + new_size, old_size - new_size) != 0)
			return MAP_FAILED;
		return old;
	}
	void *q = mmap(NULL, new_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (q == MAP_FAILED)
		return MAP_FAILED;
	memcpy(q, old, old_size);
	munmap(old, old_size);
	return q;
}
