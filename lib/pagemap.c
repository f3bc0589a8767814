/*
 * pagemap.c - address -> owner, for every page sheaf hands out.
 *
 * Like tcmalloc's pagemap and jemalloc's rtree, but with a fixed two-level
 * shape (see internal.h).  Writers are the slow paths that create or destroy
 * a slab or a large mapping; readers are every free.  A reader can only
 * look up a page it got from sheaf (or a foreign one), so it never races
 * with the writer of that page's entry; leaves are published with a CAS and
 * never unmapped, so a lookup never touches freed memory.
 */
#include "internal.h"

#include <sys/mman.h>

uintptr_t *pagemap_l1[1u << PM_L1_BITS];

static uintptr_t *pagemap_leaf(uintptr_t i1)
{
	uintptr_t *leaf = __atomic_load_n(&pagemap_l1[i1], __ATOMIC_ACQUIRE);
	if (leaf)
		return leaf;
	size_t bytes = sizeof(uintptr_t) << PM_L2_BITS;
	void *fresh = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (fresh == MAP_FAILED)
		return NULL;
	uintptr_t *expected = NULL;
	if (!__atomic_compare_exchange_n(&pagemap_l1[i1], &expected, (uintptr_t *)fresh, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		munmap(fresh, bytes);   /* another thread won */
		return expected;
	}
	return fresh;
}

/* Entries [start, addr) were set: back to 0, so that a range that failed
 * halfway does not name an owner its caller is about to free.  Their
 * leaves exist, so this cannot fail. */
static bool pagemap_undo(uintptr_t start, uintptr_t addr, uintptr_t val)
{
	if (val && addr > start)
		pagemap_set(start, (addr - start) >> PAGE_SHIFT, 0);
	return false;
}

/* Entry k of the range gets val + k * step. */
static bool pagemap_fill(uintptr_t addr, size_t npages, uintptr_t val, uintptr_t step)
{
	uintptr_t start = addr;
	while (npages) {
		uintptr_t i1 = addr >> (PAGE_SHIFT + PM_L2_BITS);
		if (i1 >= (1u << PM_L1_BITS))
			return pagemap_undo(start, addr, val);
		uintptr_t *leaf = pagemap_leaf(i1);
		if (!leaf)
			return pagemap_undo(start, addr, val);
		size_t i2 = (addr >> PAGE_SHIFT) & ((1u << PM_L2_BITS) - 1);
		size_t n = ((size_t)1 << PM_L2_BITS) - i2;
		if (n > npages)
			n = npages;
		for (size_t k = 0; k < n; k++, val += step)
			__atomic_store_n(&leaf[i2 + k], val, __ATOMIC_RELAXED);
		npages -= n;
		addr += n << PAGE_SHIFT;
	}
	/* Entries must be visible before the memory is handed out; the hand-out
	 * to another thread is the program's synchronisation, this orders ours. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	return true;
}

bool pagemap_set(uintptr_t addr, size_t npages, uintptr_t val)
{
	return pagemap_fill(addr, npages, val, 0);
}

/* cls: the class whose free fast path may take the slab's objects, or
 * CLASS_NONE (a user cache's slab, a debugged class's). */
bool pagemap_set_slab(const struct slab *s, size_t npages, unsigned int cls)
{
	uintptr_t val = (uintptr_t)s;
	sheaf_assert(!(val & ~PM_OWNER_MASK) && !(val & PM_TAG_LARGE));
	if (cls < NR_CLASSES)
		val |= (uintptr_t)(cls + 1) << PM_CLASS_SHIFT;
	return pagemap_fill(s->run, npages, val, (uintptr_t)1 << PM_PAGE_SHIFT);
}
