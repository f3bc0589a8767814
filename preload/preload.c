/*
 * preload.c - the malloc family under glibc's names and ABI.
 *
 * This file is what makes `LD_PRELOAD=libsheaf.so prog` (or linking with
 * -lsheaf) replace malloc: every entry point glibc exports, including the
 * __libc_* and __posix_memalign aliases that glibc-internal and some
 * third-party code call directly (a missing alias would hand us foreign
 * pointers).  malloc and free inline their fast paths here; everything else
 * calls the hidden do_* implementations in lib/malloc.c.
 */
#include "fastpath.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))
#define ALIAS(name) __attribute__((alias(#name), visibility("default")))

/* Each on a cache line of its own (see HOT_ALIGN). */
EXPORT HOT_ALIGN void *malloc(size_t size) { return malloc_fast(size); }
EXPORT HOT_ALIGN void free(void *ptr) { free_fast(ptr, "free()"); }
EXPORT void *calloc(size_t nmemb, size_t size) { return do_calloc(nmemb, size); }
EXPORT void *realloc(void *ptr, size_t size) { return do_realloc(ptr, size, "realloc()"); }
EXPORT void *reallocarray(void *ptr, size_t nmemb, size_t size)
{
	return do_reallocarray(ptr, nmemb, size);
}
EXPORT int posix_memalign(void **memptr, size_t align, size_t size)
{
	return do_posix_memalign(memptr, align, size);
}
EXPORT void *aligned_alloc(size_t align, size_t size) { return do_aligned_alloc(align, size); }
EXPORT void *memalign(size_t align, size_t size) { return do_memalign_glibc(align, size); }
EXPORT void *valloc(size_t size) { return do_memalign(PAGE_SIZE, size); }
EXPORT void *pvalloc(size_t size) { return do_pvalloc(size); }
EXPORT size_t malloc_usable_size(void *ptr) { return do_usable_size(ptr); }
EXPORT int malloc_trim(size_t pad) { return do_malloc_trim(pad); }

/* C23; glibc 2.36's headers do not declare them yet. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t align, size_t size);
EXPORT void free_sized(void *ptr, size_t size) { do_free_sized(ptr, size, "free_sized()"); }
EXPORT void free_aligned_sized(void *ptr, size_t align, size_t size)
{
	(void)align;
	do_free_sized(ptr, size, "free_aligned_sized()");
}

/* Old SunOS name, still exported by glibc for binaries that use it. */
void cfree(void *ptr);
EXPORT void cfree(void *ptr) { free_fast(ptr, "cfree()"); }

/* glibc's internal names.  (An alias cannot repeat glibc's attributes on
 * the public prototypes, which GCC would warn about.) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#endif
void *__libc_malloc(size_t size) ALIAS(malloc);
void __libc_free(void *ptr) ALIAS(free);
void *__libc_calloc(size_t nmemb, size_t size) ALIAS(calloc);
void *__libc_realloc(void *ptr, size_t size) ALIAS(realloc);
void *__libc_memalign(size_t align, size_t size) ALIAS(memalign);
void *__libc_valloc(size_t size) ALIAS(valloc);
void *__libc_pvalloc(size_t size) ALIAS(pvalloc);
int __posix_memalign(void **memptr, size_t align, size_t size) ALIAS(posix_memalign);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/*
 * mallopt: sheaf has no tunables of glibc's kind (no arenas, no trim
 * threshold, no mmap threshold: see SHEAF_OPTIONS instead).  Every
 * parameter glibc knows is accepted and ignored, returning 1 ("success") so
 * that programs tuning glibc keep working; unknown parameters return 0.
 */
EXPORT int mallopt(int param, int value)
{
	(void)value;
	switch (param) {
	case M_MXFAST: case M_TRIM_THRESHOLD: case M_TOP_PAD: case M_MMAP_THRESHOLD:
	case M_MMAP_MAX: case M_CHECK_ACTION: case M_PERTURB: case M_ARENA_TEST:
	case M_ARENA_MAX: case 2 /* M_NLBLKS */: case 3 /* M_GRAIN */: case 4 /* M_KEEP */:
		return 1;
	default:
		return 0;
	}
}

/* glibc's fields mapped onto sheaf's state:
 *   arena    bytes of slabs held (resident)     uordblks bytes allocated in slabs
 *   fordblks arena - uordblks                   hblks/hblkhd live large mappings
 *   keepcost freed large mappings cached        ordblks  number of caches */
EXPORT struct mallinfo2 mallinfo2(void)
{
	struct sheaf_stats t;
	struct mallinfo2 mi = { 0 };
	sheaf_stats_get(&t);
	size_t small_active = t.active_bytes - t.large_bytes;
	mi.arena = t.resident_slab_bytes;
	mi.ordblks = t.caches;
	mi.hblks = t.large_allocs;
	mi.hblkhd = t.large_bytes;
	mi.uordblks = small_active;
	mi.fordblks = t.resident_slab_bytes > small_active ? t.resident_slab_bytes - small_active : 0;
	mi.keepcost = t.large_cached_bytes;
	return mi;
}

static int clamp_int(size_t v)
{
	return v > 0x7fffffff ? 0x7fffffff : (int)v;
}

/* Deprecated in glibc for its int fields; values saturate at INT_MAX. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
EXPORT struct mallinfo mallinfo(void)
{
	struct mallinfo2 m2 = mallinfo2();
	struct mallinfo mi = { 0 };
	mi.arena = clamp_int(m2.arena);
	mi.ordblks = clamp_int(m2.ordblks);
	mi.hblks = clamp_int(m2.hblks);
	mi.hblkhd = clamp_int(m2.hblkhd);
	mi.uordblks = clamp_int(m2.uordblks);
	mi.fordblks = clamp_int(m2.fordblks);
	mi.keepcost = clamp_int(m2.keepcost);
	return mi;
}
#pragma GCC diagnostic pop

EXPORT void malloc_stats(void)
{
	struct sheaf_stats t;
	sheaf_stats_get(&t);
	fprintf(stderr, "Arena 0:\nsystem bytes     = %10zu\nin use bytes     = %10zu\n",
		t.resident_slab_bytes, t.active_bytes - t.large_bytes);
	fprintf(stderr, "Total (incl. mmap):\nsystem bytes     = %10zu\nin use bytes     = %10zu\n",
		t.mapped_bytes, t.active_bytes);
	fprintf(stderr, "max mmap regions = %10zu\nmax mmap bytes   = %10zu\n", t.large_allocs,
		t.large_bytes);
	sheaf_stats_print(stderr);
}

struct info_arg {
	FILE *fp;
	size_t count, bytes;
};

static void info_cache(const struct sheaf_cache_stats *st, void *arg)
{
	struct info_arg *a = arg;
	if (!st->slabs && !st->objects_active)
		return;
	size_t free_objs = st->objects_total > st->objects_active ? st->objects_total - st->objects_active : 0;
	fprintf(a->fp, "  <size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\" name=\"%s\" active=\"%zu\"/>\n",
		st->object_size, st->object_size, free_objs * st->object_size, free_objs, st->name,
		st->objects_active);
	a->count += free_objs;
	a->bytes += free_objs * st->object_size;
}

/* glibc's XML shape, with one <size> per cache (free objects in slabs). */
EXPORT int malloc_info(int options, FILE *fp)
{
	if (options != 0 || !fp) {
		errno = EINVAL;
		return -1;
	}
	struct sheaf_stats t;
	sheaf_stats_get(&t);
	struct info_arg a = { fp, 0, 0 };
	fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
	sheaf_stats_foreach(info_cache, &a);
	fprintf(fp, "</sizes>\n<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
	fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", a.count, a.bytes);
	fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n",
		t.resident_slab_bytes, t.resident_slab_bytes);
	fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n",
		t.mapped_bytes, t.mapped_bytes);
	fprintf(fp, "</heap>\n<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", t.large_allocs,
		t.large_bytes);
	fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n",
		t.mapped_bytes, t.mapped_bytes);
	fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n</malloc>\n",
		t.mapped_bytes, t.mapped_bytes);
	return 0;
}
