/*
 * page.c - the page source: address space from the OS.
 *
 * Slabs are runs of SLAB_MIN_BYTES << order bytes carved from 64 MiB regions
 * reserved with MAP_NORESERVE: one mmap per region instead of one per slab
 * keeps the process far below vm.max_map_count and makes slab creation a
 * pointer bump.  A freed run keeps its address space (binned by order for
 * reuse) but its pages go back to the OS at once with MADV_DONTNEED, so
 * resident memory falls when slabs empty.  Large allocations get mappings of
 * their own (page_map/page_unmap).
 */
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>

#define REGION_BYTES ((size_t)64 << 20)

static sheaf_lock_t page_lock = SHEAF_LOCK_INIT;
static uintptr_t region_cur, region_end;   /* bump range, under page_lock */
/* Free runs are listed out of line: their pages were handed back to the OS
 * and writing a link into them would fault one back in. */
struct free_run {
	struct free_run *next;
	void *run;
};
static struct free_run *run_bins[SLAB_MAX_ORDER + 1];
static size_t mapped_bytes;                /* atomic */
static size_t resident_run_bytes;          /* runs handed out, atomic */
static unsigned int fail_next;             /* fault injection, atomic */
static unsigned int madvise_fail_next;     /* the same for madvise() */
static uint64_t madvise_failed;            /* atomic: runs kept resident */

static inline size_t order_bytes(unsigned int order)
{
	return SLAB_MIN_BYTES << order;
}

void page_fail_next(unsigned int n)
{
	__atomic_store_n(&fail_next, n, __ATOMIC_RELAXED);
}

void page_fail_madvise_next(unsigned int n)
{
	__atomic_store_n(&madvise_fail_next, n, __ATOMIC_RELAXED);
}

uint64_t page_madvise_failures(void)
{
	return __atomic_load_n(&madvise_failed, __ATOMIC_RELAXED);
}

static bool take_one(unsigned int *counter)
{
	unsigned int n = __atomic_load_n(counter, __ATOMIC_RELAXED);
	while (n) {
		if (__atomic_compare_exchange_n(counter, &n, n - 1, false, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED))
			return true;
	}
	return false;
}

static bool injected_failure(void)
{
	return take_one(&fail_next);
}

static void *os_map(size_t bytes)
{
	if (injected_failure()) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	__atomic_fetch_add(&mapped_bytes, bytes, __ATOMIC_RELAXED);
	return p;
}

void *page_alloc_run(unsigned int order)
{
	size_t bytes = order_bytes(order);
	void *run = NULL;

	lock_acquire(&page_lock);
	if (run_bins[order]) {
		struct free_run *fr = run_bins[order];
		run_bins[order] = fr->next;
		run = fr->run;
		meta_free(fr, sizeof(*fr));
	} else {
		if (region_end - region_cur < bytes) {
			/* The tail of the old region is lost to fragmentation
			 * only when it is smaller than this run; carve it into
			 * the smaller bins first so it is not wasted. */
			for (int o = (int)order - 1; o >= 0; o--) {
				while (region_end - region_cur >= order_bytes((unsigned int)o)) {
					struct free_run *fr = meta_alloc(sizeof(*fr));
					if (!fr)
						break;
					fr->run = (void *)region_cur;
					region_cur += order_bytes((unsigned int)o);
					fr->next = run_bins[o];
					run_bins[o] = fr;
				}
			}
			void *reg = os_map(REGION_BYTES);
			if (!reg) {
				lock_release(&page_lock);
				return NULL;
			}
			region_cur = (uintptr_t)reg;
			region_end = region_cur + REGION_BYTES;
		}
		run = (void *)region_cur;
		region_cur += bytes;
	}
	lock_release(&page_lock);
	__atomic_fetch_add(&resident_run_bytes, bytes, __ATOMIC_RELAXED);
	return run;
}

void page_free_run(void *run, unsigned int order)
{
	size_t bytes = order_bytes(order);
	/* Pages back to the OS before the run is visible for reuse.  If
	 * that fails the run is reused as it is: nothing assumes a reused
	 * run is zero (calloc clears what slabs give it), only the memory
	 * stays resident. */
	if (take_one(&madvise_fail_next) || madvise(run, bytes, MADV_DONTNEED) != 0)
		__atomic_fetch_add(&madvise_failed, 1, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&resident_run_bytes, bytes, __ATOMIC_RELAXED);
	struct free_run *fr = meta_alloc(sizeof(*fr));
	if (!fr)
		return;         /* address space leaks; its memory is already back */
	fr->run = run;
	lock_acquire(&page_lock);
	fr->next = run_bins[order];
	run_bins[order] = fr;
	lock_release(&page_lock);
}

void *page_map(size_t bytes, size_t align)
{
	if (align <= PAGE_SIZE)
		return os_map(bytes);
	/* Over-map, then cut the unaligned head and the tail off. */
	size_t span = bytes + align;
	if (span < bytes) {
		errno = ENOMEM;
		return NULL;
	}
	char *p = os_map(span);
	if (!p)
		return NULL;
	uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
	size_t head = a - (uintptr_t)p, tail = span - head - bytes;
	if (head)
		page_unmap(p, head);
	if (tail)
		page_unmap((char *)a + bytes, tail);
	return (void *)a;
}

void page_unmap(void *p, size_t bytes)
{
	munmap(p, bytes);
	__atomic_fetch_sub(&mapped_bytes, bytes, __ATOMIC_RELAXED);
}

size_t page_mapped_bytes(void)
{
	return __atomic_load_n(&mapped_bytes, __ATOMIC_RELAXED);
}

size_t page_resident_run_bytes(void)
{
	return __atomic_load_n(&resident_run_bytes, __ATOMIC_RELAXED);
}

void page_fork_prepare(void) { lock_acquire(&page_lock); }
void page_fork_parent(void) { lock_release(&page_lock); }
void page_fork_child(void) { lock_reinit(&page_lock); }

void *page_remap(void *p, size_t old_bytes, size_t new_bytes)
{
	void *q = mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE);
	if (q == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	if (new_bytes >= old_bytes)
		__atomic_fetch_add(&mapped_bytes, new_bytes - old_bytes, __ATOMIC_RELAXED);
	else
		__atomic_fetch_sub(&mapped_bytes, old_bytes - new_bytes, __ATOMIC_RELAXED);
	return q;
}
