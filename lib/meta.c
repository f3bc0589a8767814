/*
 * meta.c - memory for sheaf's own structures.
 *
 * Slab headers, sheaves, thread state and large-allocation descriptors live
 * here, away from user objects, so a buffer overflow in the program cannot
 * reach allocator metadata.  Sizes are rounded to 64 bytes (one cache line,
 * which also keeps sheaves of different threads off each other's lines) and
 * recycled through one free list per rounded size.  Allocation is rare
 * (slow paths only), so one lock is enough.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define META_CHUNK   ((size_t)1 << 20)
#define META_GRAIN   64
#define META_MAX     8192
#define META_BINS    (META_MAX / META_GRAIN)

static sheaf_lock_t meta_lock = SHEAF_LOCK_INIT;
static char *meta_cur, *meta_end;
static void *meta_bins[META_BINS + 1];
static size_t meta_mapped;

static inline size_t meta_round(size_t size)
{
	return (size + META_GRAIN - 1) & ~(size_t)(META_GRAIN - 1);
}

void *meta_alloc(size_t size)
{
	size = meta_round(size ? size : 1);
	if (size > META_MAX) {
		/* Rare (huge thread ext arrays): a mapping of its own. */
		void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			errno = ENOMEM;
			return NULL;
		}
		__atomic_fetch_add(&meta_mapped, size, __ATOMIC_RELAXED);
		return p;
	}
	size_t bin = size / META_GRAIN;
	void *p;
	lock_acquire(&meta_lock);
	if (meta_bins[bin]) {
		p = meta_bins[bin];
		meta_bins[bin] = *(void **)p;
		lock_release(&meta_lock);
		memset(p, 0, size);
		return p;
	}
	if ((size_t)(meta_end - meta_cur) < size) {
		void *c = mmap(NULL, META_CHUNK, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (c == MAP_FAILED) {
			lock_release(&meta_lock);
			errno = ENOMEM;
			return NULL;
		}
		__atomic_fetch_add(&meta_mapped, META_CHUNK, __ATOMIC_RELAXED);
		meta_cur = c;
		meta_end = meta_cur + META_CHUNK;
	}
	p = meta_cur;           /* fresh mmap memory is already zero */
	meta_cur += size;
	lock_release(&meta_lock);
	return p;
}

void meta_free(void *p, size_t size)
{
	if (!p)
		return;
	size = meta_round(size ? size : 1);
	if (size > META_MAX) {
		munmap(p, size);
		__atomic_fetch_sub(&meta_mapped, size, __ATOMIC_RELAXED);
		return;
	}
	size_t bin = size / META_GRAIN;
	lock_acquire(&meta_lock);
	*(void **)p = meta_bins[bin];
	meta_bins[bin] = p;
	lock_release(&meta_lock);
}

size_t meta_mapped_bytes(void)
{
	return __atomic_load_n(&meta_mapped, __ATOMIC_RELAXED);
}

void meta_fork_prepare(void) { lock_acquire(&meta_lock); }
void meta_fork_parent(void) { lock_release(&meta_lock); }
void meta_fork_child(void) { lock_reinit(&meta_lock); }
