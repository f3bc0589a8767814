/*
 * test_api.c - conformance of the malloc family that libsheaf exports.
 *
 * What it proves, for a program linked with libsheaf:
 *   - every entry point glibc programs and libraries call (the C / POSIX /
 *     glibc malloc family, the glibc extras, cfree, free_sized,
 *     free_aligned_sized, the __libc_* and __posix_memalign aliases) and
 *     every sheaf_* name resolves into libsheaf, not into libc;
 *   - the block each allocation function returns is a sheaf block:
 *     sheaf_malloc_usable_size() accepts it and sheaf_stats_get() counts it,
 *     and each free function brings the live count back;
 *   - the contracts: alignment (16 bytes from size 16 on, the requested
 *     power of two from 8 B to 1 MiB, page for valloc/pvalloc), usable size
 *     (at least the request, writable in full without touching a neighbour),
 *     calloc memory zero even when it reuses dirtied blocks, realloc keeping
 *     the contents while growing and shrinking across size classes and the
 *     small/large boundary (32 KiB), malloc(0) / realloc(p, 0) / free(NULL);
 *   - the errors: NULL + ENOMEM for impossible sizes and for overflow in
 *     calloc / reallocarray (the old block stays intact), EINVAL for bad
 *     alignments, posix_memalign returning the error number and leaving
 *     *memptr alone;
 *   - the glibc extras behave: mallopt accepts every glibc parameter,
 *     malloc_trim returns 0 or 1 and memory stays usable, mallinfo/mallinfo2
 *     report real numbers, malloc_stats writes to stderr only, malloc_info
 *     writes XML and rejects options.
 *
 * With SHEAF_VALGRIND_QUICK set, the test runs under memcheck (make
 * check-valgrind): it does less work and writes only the requested bytes of a
 * block, never the slack up to the usable size, because memcheck knows a
 * block by the size that was asked for.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sheaf.h"
#include "check.h"

/*
 * Not declared by glibc 2.36's headers.  Weak, so that a libsheaf missing one
 * of them fails a CHECK below instead of the link of the whole test suite.
 */
extern void free_sized(void *ptr, size_t size) __attribute__((weak));
extern void free_aligned_sized(void *ptr, size_t alignment, size_t size) __attribute__((weak));
extern void cfree(void *ptr) __attribute__((weak));
/* glibc exports these aliases too: they are only called once resolves_to_sheaf()
 * has shown that the definition the program binds to is sheaf's. */
extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_calloc(size_t nmemb, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);
extern int __posix_memalign(void **memptr, size_t alignment, size_t size);

static bool quick;     /* running under valgrind: less work, no slack writes */
static size_t page_size;

/*
 * The compiler knows the malloc family (it may drop a malloc/free pair, fold
 * a test of calloc'd memory to "zero" or warn about sizes it can see): pass
 * pointers and sizes through an empty asm so it knows nothing.
 */
static void *hide(void *p)
{
	__asm__ volatile("" : "+r"(p) : : "memory");
	return p;
}

static size_t hide_size(size_t n)
{
	__asm__ volatile("" : "+r"(n));
	return n;
}

/* ------------------------------------------------------------- helpers -- */

static uint8_t pattern_byte(size_t i, unsigned int seed)
{
	return (uint8_t)((i ^ (i >> 8) ^ (i >> 16)) * 0x9du + seed * 0x3bu + 0x5bu);
}

static void fill(void *p, size_t from, size_t to, unsigned int seed)
{
	uint8_t *b = p;
	for (size_t i = from; i < to; i++)
		b[i] = pattern_byte(i, seed);
}

/* Returns the index of the first wrong byte, or SIZE_MAX if all are right. */
static size_t verify(const void *p, size_t from, size_t to, unsigned int seed)
{
	const uint8_t *b = hide((void *)p);
	for (size_t i = from; i < to; i++)
		if (b[i] != pattern_byte(i, seed))
			return i;
	return SIZE_MAX;
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = hide((void *)p);
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static bool aligned(const void *p, size_t align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

/* What a plain malloc result must be aligned to: 16 from 16 bytes on, 8 below. */
static size_t malloc_align(size_t size)
{
	return size >= 16 ? 16 : 8;
}

/* Bytes of a block the test may write: all usable bytes, except under memcheck. */
static size_t writable(void *p, size_t size)
{
	return quick ? size : sheaf_malloc_usable_size(p);
}

static struct sheaf_stats stats(void)
{
	struct sheaf_stats s;
	memset(&s, 0, sizeof(s));
	sheaf_stats_get(&s);
	return s;
}

static int64_t live(const struct sheaf_stats *s)
{
	return (int64_t)(s->allocs - s->frees);
}

/* Does the definition of `name` that the program binds to lie in libsheaf? */
static bool resolves_to_sheaf(const char *name)
{
	void *addr = dlsym(RTLD_DEFAULT, name);
	Dl_info info;

	if (!addr) {
		CHECKF(addr != NULL, "symbol %s not found", name);
		return false;
	}
	memset(&info, 0, sizeof(info));
	if (!dladdr(addr, &info) || !info.dli_fname) {
		CHECKF(false, "dladdr(%s = %p) failed", name, addr);
		return false;
	}
	bool ok = strstr(info.dli_fname, "libsheaf") != NULL;
	CHECKF(ok, "%s resolves to %s, not to libsheaf", name, info.dli_fname);
	return ok;
}

/* ------------------------------------------------------------- symbols -- */

static const char *const exported_names[] = {
	"malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
	"aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size",
	"free_sized", "free_aligned_sized", "malloc_trim", "mallopt", "mallinfo",
	"mallinfo2", "malloc_stats", "malloc_info", "cfree",
	"__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc",
	"__libc_memalign", "__libc_valloc", "__libc_pvalloc", "__posix_memalign",
	"sheaf_malloc", "sheaf_calloc", "sheaf_realloc", "sheaf_reallocarray",
	"sheaf_free", "sheaf_free_sized", "sheaf_free_aligned_sized",
	"sheaf_posix_memalign", "sheaf_aligned_alloc", "sheaf_memalign",
	"sheaf_valloc", "sheaf_pvalloc", "sheaf_malloc_usable_size", "sheaf_malloc_trim",
	"sheaf_cache_create", "sheaf_cache_alloc", "sheaf_cache_free",
	"sheaf_cache_alloc_bulk", "sheaf_cache_free_bulk", "sheaf_cache_destroy",
	"sheaf_cache_object_size", "sheaf_cache_name", "sheaf_stats_get",
	"sheaf_stats_foreach", "sheaf_cache_stats_get", "sheaf_stats_print",
	"sheaf_stat_name",
};

/* Set by test_symbols(): names that resolve to sheaf and may be called. */
static bool sym_ok[sizeof(exported_names) / sizeof(exported_names[0])];

static bool callable(const char *name)
{
	for (size_t i = 0; i < sizeof(exported_names) / sizeof(exported_names[0]); i++)
		if (strcmp(exported_names[i], name) == 0)
			return sym_ok[i];
	REQUIRE(!"name missing from exported_names");
	return false;
}

static void test_symbols(void)
{
	for (size_t i = 0; i < sizeof(exported_names) / sizeof(exported_names[0]); i++)
		sym_ok[i] = resolves_to_sheaf(exported_names[i]);
	CHECK(free_sized != NULL);
	CHECK(free_aligned_sized != NULL);
	CHECK(cfree != NULL);
}

/* ------------------------------------------- each allocation function -- */
/*
 * Each allocation function is wrapped to the same shape.  `align_out` gets
 * the alignment the result must have; `usable_out` the minimum usable size.
 */
#define TEST_ALIGN 64

static void *a_malloc(size_t n) { return malloc(n); }
static void *a_calloc(size_t n) { return calloc(1, n); }
static void *a_realloc(size_t n) { return realloc(NULL, n); }
static void *a_reallocarray(size_t n) { return reallocarray(NULL, 1, n); }
static void *a_posix_memalign(size_t n)
{
	void *p = NULL;
	return posix_memalign(&p, TEST_ALIGN, n) == 0 ? p : NULL;
}
static void *a_aligned_alloc(size_t n) { return aligned_alloc(TEST_ALIGN, n); }
static void *a_memalign(size_t n) { return memalign(TEST_ALIGN, n); }
static void *a_valloc(size_t n) { return valloc(n); }
static void *a_pvalloc(size_t n) { return pvalloc(n); }
static void *a_libc_malloc(size_t n) { return __libc_malloc(n); }
static void *a_libc_calloc(size_t n) { return __libc_calloc(1, n); }
static void *a_libc_realloc(size_t n) { return __libc_realloc(NULL, n); }
static void *a_libc_memalign(size_t n) { return __libc_memalign(TEST_ALIGN, n); }
static void *a_libc_valloc(size_t n) { return __libc_valloc(n); }
static void *a_libc_pvalloc(size_t n) { return __libc_pvalloc(n); }
static void *a_posix_memalign_alias(size_t n)
{
	void *p = NULL;
	return __posix_memalign(&p, TEST_ALIGN, n) == 0 ? p : NULL;
}
static void *a_sheaf_malloc(size_t n) { return sheaf_malloc(n); }
static void *a_sheaf_calloc(size_t n) { return sheaf_calloc(n, 1); }
static void *a_sheaf_realloc(size_t n) { return sheaf_realloc(NULL, n); }
static void *a_sheaf_reallocarray(size_t n) { return sheaf_reallocarray(NULL, n, 1); }
static void *a_sheaf_posix_memalign(size_t n)
{
	void *p = NULL;
	return sheaf_posix_memalign(&p, TEST_ALIGN, n) == 0 ? p : NULL;
}
static void *a_sheaf_aligned_alloc(size_t n) { return sheaf_aligned_alloc(TEST_ALIGN, n); }
static void *a_sheaf_memalign(size_t n) { return sheaf_memalign(TEST_ALIGN, n); }
static void *a_sheaf_valloc(size_t n) { return sheaf_valloc(n); }
static void *a_sheaf_pvalloc(size_t n) { return sheaf_pvalloc(n); }

enum align_kind { AK_MALLOC, AK_TEST, AK_PAGE, AK_PVALLOC };

static const struct alloc_fn {
	const char *name;
	void *(*fn)(size_t n);
	enum align_kind kind;
	bool zeroed;
} alloc_fns[] = {
	{ "malloc", a_malloc, AK_MALLOC, false },
	{ "calloc", a_calloc, AK_MALLOC, true },
	{ "realloc", a_realloc, AK_MALLOC, false },
	{ "reallocarray", a_reallocarray, AK_MALLOC, false },
	{ "posix_memalign", a_posix_memalign, AK_TEST, false },
	{ "aligned_alloc", a_aligned_alloc, AK_TEST, false },
	{ "memalign", a_memalign, AK_TEST, false },
	{ "valloc", a_valloc, AK_PAGE, false },
	{ "pvalloc", a_pvalloc, AK_PVALLOC, false },
	{ "__libc_malloc", a_libc_malloc, AK_MALLOC, false },
	{ "__libc_calloc", a_libc_calloc, AK_MALLOC, true },
	{ "__libc_realloc", a_libc_realloc, AK_MALLOC, false },
	{ "__libc_memalign", a_libc_memalign, AK_TEST, false },
	{ "__libc_valloc", a_libc_valloc, AK_PAGE, false },
	{ "__libc_pvalloc", a_libc_pvalloc, AK_PVALLOC, false },
	{ "__posix_memalign", a_posix_memalign_alias, AK_TEST, false },
	{ "sheaf_malloc", a_sheaf_malloc, AK_MALLOC, false },
	{ "sheaf_calloc", a_sheaf_calloc, AK_MALLOC, true },
	{ "sheaf_realloc", a_sheaf_realloc, AK_MALLOC, false },
	{ "sheaf_reallocarray", a_sheaf_reallocarray, AK_MALLOC, false },
	{ "sheaf_posix_memalign", a_sheaf_posix_memalign, AK_TEST, false },
	{ "sheaf_aligned_alloc", a_sheaf_aligned_alloc, AK_TEST, false },
	{ "sheaf_memalign", a_sheaf_memalign, AK_TEST, false },
	{ "sheaf_valloc", a_sheaf_valloc, AK_PAGE, false },
	{ "sheaf_pvalloc", a_sheaf_pvalloc, AK_PVALLOC, false },
};

static void f_free(void *p, size_t n, size_t a) { (void)n; (void)a; free(p); }
static void f_cfree(void *p, size_t n, size_t a) { (void)n; (void)a; cfree(p); }
static void f_libc_free(void *p, size_t n, size_t a) { (void)n; (void)a; __libc_free(p); }
static void f_sheaf_free(void *p, size_t n, size_t a) { (void)n; (void)a; sheaf_free(p); }
static void f_free_sized(void *p, size_t n, size_t a) { (void)a; free_sized(p, n); }
static void f_free_aligned_sized(void *p, size_t n, size_t a) { free_aligned_sized(p, a, n); }
static void f_sheaf_free_sized(void *p, size_t n, size_t a) { (void)a; sheaf_free_sized(p, n); }
static void f_sheaf_free_aligned_sized(void *p, size_t n, size_t a)
{
	sheaf_free_aligned_sized(p, a, n);
}
static void f_realloc0(void *p, size_t n, size_t a)
{
	(void)n; (void)a;
	/* realloc(p, 0) frees p; it may return a new minimal block (free that too). */
	free(realloc(p, 0));
}

static const struct free_fn {
	const char *name;
	void (*fn)(void *p, size_t size, size_t align);
	bool needs_aligned_alloc; /* free_aligned_sized: block from aligned_alloc */
} free_fns[] = {
	{ "free", f_free, false },
	{ "cfree", f_cfree, false },
	{ "__libc_free", f_libc_free, false },
	{ "sheaf_free", f_sheaf_free, false },
	{ "free_sized", f_free_sized, false },
	{ "free_aligned_sized", f_free_aligned_sized, true },
	{ "sheaf_free_sized", f_sheaf_free_sized, false },
	{ "sheaf_free_aligned_sized", f_sheaf_free_aligned_sized, true },
	{ "realloc", f_realloc0, false },
};

static void check_one_alloc(const struct alloc_fn *af, size_t n)
{
	struct sheaf_stats before = stats();
	uint8_t *p = af->fn(n);
	struct sheaf_stats after = stats();
	size_t align, min_usable = n;

	CHECKF(p != NULL, "%s(%zu) returned NULL", af->name, n);
	if (!p)
		return;
	CHECKF(after.allocs - before.allocs >= 1, "%s(%zu): sheaf_stats allocs did not grow",
	       af->name, n);
	switch (af->kind) {
	case AK_MALLOC: align = malloc_align(n); break;
	case AK_TEST: align = TEST_ALIGN; break;
	case AK_PAGE: align = page_size; break;
	default:
		align = page_size;
		min_usable = (n + page_size - 1) / page_size * page_size;
		if (min_usable == 0)
			min_usable = page_size;
		break;
	}
	CHECKF(aligned(p, align), "%s(%zu) = %p not aligned to %zu", af->name, n, (void *)p, align);
	size_t usable = sheaf_malloc_usable_size(p);
	CHECKF(usable >= min_usable, "%s(%zu): usable size %zu < %zu", af->name, n, usable,
	       min_usable);
	if (af->zeroed)
		CHECKF(all_zero(p, n), "%s(%zu): memory not zeroed", af->name, n);
	/* pvalloc's rounded-up size is part of the request: always writable. */
	size_t w = af->kind == AK_PVALLOC ? min_usable : n;
	fill(p, 0, w, 1);
	size_t bad = verify(p, 0, w, 1);
	CHECKF(bad == SIZE_MAX, "%s(%zu): byte %zu did not hold", af->name, n, bad);
	free(p);
	struct sheaf_stats end = stats();
	CHECKF(live(&end) == live(&before), "%s(%zu) + free: live blocks %lld -> %lld", af->name,
	       n, (long long)live(&before), (long long)live(&end));
}

static void check_one_free(const struct free_fn *ff, size_t n)
{
	uint8_t *p = ff->needs_aligned_alloc ? aligned_alloc(TEST_ALIGN, n) : malloc(n);

	CHECKF(p != NULL, "allocation of %zu for %s failed", n, ff->name);
	if (!p)
		return;
	fill(p, 0, n, 2);
	struct sheaf_stats before = stats();
	ff->fn(p, n, TEST_ALIGN);
	struct sheaf_stats after = stats();
	CHECKF(after.frees - before.frees >= 1, "%s(%zu bytes): sheaf_stats frees did not grow",
	       ff->name, n);
	CHECKF(live(&after) == live(&before) - 1, "%s(%zu bytes): live blocks %lld -> %lld",
	       ff->name, n, (long long)live(&before), (long long)live(&after));
}

static void test_each_function(void)
{
	static const size_t sizes[] = { 0, 1, 24, 1000, 32768, 100000, 1 << 20 };

	free(hide(malloc(16))); /* let lazy per-thread set-up happen outside the deltas */
	for (size_t i = 0; i < sizeof(alloc_fns) / sizeof(alloc_fns[0]); i++) {
		if (!callable(alloc_fns[i].name))
			continue;
		for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++)
			check_one_alloc(&alloc_fns[i], sizes[j]);
	}
	for (size_t i = 0; i < sizeof(free_fns) / sizeof(free_fns[0]); i++) {
		if (!callable(free_fns[i].name))
			continue;
		for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++)
			check_one_free(&free_fns[i], sizes[j]);
	}
	/* NULL is a no-op for every free function. */
	struct sheaf_stats before = stats();
	free(NULL);
	sheaf_free(NULL);
	if (callable("__libc_free"))
		__libc_free(NULL);
	if (callable("cfree"))
		cfree(NULL);
	if (callable("free_sized"))
		free_sized(NULL, 0);
	if (callable("free_aligned_sized"))
		free_aligned_sized(NULL, TEST_ALIGN, 0);
	sheaf_free_sized(NULL, 0);
	struct sheaf_stats after = stats();
	CHECK(live(&after) == live(&before));
	CHECK(sheaf_malloc_usable_size(NULL) == 0);
	if (callable("malloc_usable_size"))
		CHECK(malloc_usable_size(NULL) == 0);

	/* malloc_usable_size and sheaf_malloc_usable_size are the same function. */
	void *p = malloc(777);
	REQUIRE(p != NULL);
	if (callable("malloc_usable_size"))
		CHECK(malloc_usable_size(p) == sheaf_malloc_usable_size(p));
	/* Blocks cross freely between the glibc names and the sheaf_* names. */
	void *q = sheaf_realloc(p, 5000);
	CHECK(q != NULL);
	free(q);
	q = sheaf_malloc(100);
	REQUIRE(q != NULL);
	q = realloc(q, 200);
	CHECK(q != NULL);
	sheaf_free(q);
}

/* ----------------------------------------------------------- alignment -- */

static void test_alignment(void)
{
	size_t max = quick ? 4096 : 70000;
	void *blocks[16];

	/* malloc: every size up to `max`, several live at once. */
	for (size_t n = 1; n <= max; n += n < 1100 ? 1 : 61) {
		for (int k = 0; k < 4; k++) {
			blocks[k] = malloc(n);
			CHECKF(blocks[k] && aligned(blocks[k], malloc_align(n)),
			       "malloc(%zu) = %p, want alignment %zu", n, blocks[k], malloc_align(n));
		}
		for (int k = 0; k < 4; k++)
			free(blocks[k]);
	}
	for (size_t n = 64 << 10; n <= (8u << 20); n *= 2) {
		for (int d = -1; d <= 1; d++) {
			void *p = malloc(n + (size_t)d);
			CHECKF(p && aligned(p, 16), "malloc(%zu) = %p", n + (size_t)d, p);
			free(p);
		}
	}

	/* posix_memalign / aligned_alloc / memalign: 8 B .. 1 MiB, full size written. */
	for (size_t align = 8; align <= (1u << 20); align *= 2) {
		const size_t sizes[] = { 1, 8, align / 2 + 1, align - 1, align, align + 1, 3 * align,
					 5000, 40000 };
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			size_t n = sizes[s];
			if (quick && n > 200000)
				continue;
			void *p = NULL;
			int rc = posix_memalign(&p, align, n);
			CHECKF(rc == 0 && p && aligned(p, align),
			       "posix_memalign(%zu, %zu) = %d, %p", align, n, rc, p);
			blocks[0] = p;
			blocks[1] = aligned_alloc(align, n);
			CHECKF(blocks[1] && aligned(blocks[1], align), "aligned_alloc(%zu, %zu) = %p",
			       align, n, blocks[1]);
			blocks[2] = memalign(align, n);
			CHECKF(blocks[2] && aligned(blocks[2], align), "memalign(%zu, %zu) = %p", align,
			       n, blocks[2]);
			for (int k = 0; k < 3; k++) {
				if (!blocks[k])
					continue;
				CHECKF(sheaf_malloc_usable_size(blocks[k]) >= n,
				       "aligned block %d (%zu, %zu): usable %zu", k, align, n,
				       sheaf_malloc_usable_size(blocks[k]));
				fill(blocks[k], 0, n, (unsigned int)k);
			}
			for (int k = 0; k < 3; k++) {
				if (!blocks[k])
					continue;
				size_t bad = verify(blocks[k], 0, n, (unsigned int)k);
				CHECKF(bad == SIZE_MAX, "aligned block %d (%zu, %zu): byte %zu bad",
				       k, align, n, bad);
				free(blocks[k]);
			}
		}
	}

	/* aligned_alloc: 1, 2 and 4 are valid alignments too (C11 7.22.3.1). */
	for (size_t align = 1; align < 8; align *= 2)
		for (size_t n = 1; n <= 100; n += 33) {
			void *p = aligned_alloc(align, n);
			CHECKF(p != NULL, "aligned_alloc(%zu, %zu) = NULL, errno %d", align, n, errno);
			if (p) {
				CHECK(sheaf_malloc_usable_size(p) >= n);
				fill(p, 0, n, 9);
				CHECK(verify(p, 0, n, 9) == SIZE_MAX);
			}
			free(p);
		}

	/* valloc / pvalloc: page aligned; pvalloc rounds the size up to pages. */
	const size_t vsizes[] = { 1, 100, page_size - 1, page_size, page_size + 1, 3 * page_size + 5,
				  200000 };
	for (size_t s = 0; s < sizeof(vsizes) / sizeof(vsizes[0]); s++) {
		size_t n = vsizes[s];
		size_t rounded = (n + page_size - 1) / page_size * page_size;
		void *v = valloc(n);
		void *pv = pvalloc(n);
		CHECKF(v && aligned(v, page_size), "valloc(%zu) = %p", n, v);
		CHECKF(pv && aligned(pv, page_size), "pvalloc(%zu) = %p", n, pv);
		if (v) {
			CHECK(sheaf_malloc_usable_size(v) >= n);
			fill(v, 0, n, 3);
		}
		if (pv) {
			CHECKF(sheaf_malloc_usable_size(pv) >= rounded, "pvalloc(%zu): usable %zu < %zu",
			       n, sheaf_malloc_usable_size(pv), rounded);
			/* The rounded-up size is part of the request: always writable. */
			fill(pv, 0, rounded, 4);
			CHECK(verify(pv, 0, rounded, 4) == SIZE_MAX);
		}
		if (v)
			CHECK(verify(v, 0, n, 3) == SIZE_MAX);
		free(v);
		free(pv);
	}
}

/* -------------------------------------------------------------- errno --- */

static void test_errors(void)
{
	void *p;

	errno = 0;
	p = malloc(hide_size(SIZE_MAX));
	CHECKF(p == NULL && errno == ENOMEM, "malloc(SIZE_MAX) = %p, errno %d", p, errno);
	errno = 0;
	p = malloc(hide_size((size_t)PTRDIFF_MAX + 1));
	CHECKF(p == NULL && errno == ENOMEM, "malloc(PTRDIFF_MAX+1) = %p, errno %d", p, errno);
	errno = 0;
	p = sheaf_malloc(hide_size(SIZE_MAX - 4095));
	CHECKF(p == NULL && errno == ENOMEM, "sheaf_malloc(SIZE_MAX-4095) = %p, errno %d", p, errno);
	errno = 0;
	p = calloc(hide_size(SIZE_MAX / 2), 3);
	CHECKF(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX/2, 3) = %p, errno %d", p, errno);
	errno = 0;
	p = calloc(hide_size((size_t)1 << 32), (size_t)1 << 32);
	CHECKF(p == NULL && errno == ENOMEM, "calloc(2^32, 2^32) = %p, errno %d", p, errno);
	errno = 0;
	p = sheaf_calloc(hide_size(SIZE_MAX / 2), 3);
	CHECKF(p == NULL && errno == ENOMEM, "sheaf_calloc overflow = %p, errno %d", p, errno);

	/* reallocarray overflow: NULL + ENOMEM, the old block intact and still owned. */
	uint8_t *old = malloc(300);
	REQUIRE(old != NULL);
	fill(old, 0, 300, 5);
	errno = 0;
	p = reallocarray(hide(old), hide_size(SIZE_MAX / 2), 3);
	CHECKF(p == NULL && errno == ENOMEM, "reallocarray overflow = %p, errno %d", p, errno);
	CHECK(verify(old, 0, 300, 5) == SIZE_MAX);
	errno = 0;
	p = sheaf_reallocarray(hide(old), hide_size((size_t)1 << 33), (size_t)1 << 33);
	CHECKF(p == NULL && errno == ENOMEM, "sheaf_reallocarray overflow = %p, errno %d", p, errno);
	CHECK(verify(old, 0, 300, 5) == SIZE_MAX);
	errno = 0;
	p = reallocarray(NULL, hide_size(SIZE_MAX / 2), 3);
	CHECKF(p == NULL && errno == ENOMEM, "reallocarray(NULL) overflow = %p, errno %d", p, errno);
	/* A valid reallocarray keeps the contents. */
	p = reallocarray(old, 100, 10);
	CHECK(p != NULL);
	if (p) {
		CHECK(verify(p, 0, 300, 5) == SIZE_MAX);
		old = p;
	}

	/* realloc to an impossible size fails and leaves the block valid.  (hide():
	 * the block must stay usable after a failed realloc, which gcc's
	 * -Wuse-after-free=2 does not assume.) */
	errno = 0;
	p = realloc(hide(old), hide_size(SIZE_MAX));
	CHECKF(p == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX) = %p, errno %d", p, errno);
	CHECK(verify(old, 0, 300, 5) == SIZE_MAX);
	errno = 0;
	p = sheaf_realloc(hide(old), hide_size((size_t)PTRDIFF_MAX + 1));
	CHECKF(p == NULL && errno == ENOMEM, "sheaf_realloc(p, PTRDIFF_MAX+1) = %p, errno %d", p,
	       errno);
	CHECK(verify(old, 0, 300, 5) == SIZE_MAX);
	CHECK(sheaf_malloc_usable_size(old) >= 300);
	free(old);

	/* posix_memalign: bad alignment is EINVAL, returned, *memptr untouched. */
	static const size_t bad_aligns[] = { 0, 3, 4, 12, 24, 48, 100, 4097 };
	void *const sentinel = (void *)(uintptr_t)0x5eaf5eaf;
	for (size_t i = 0; i < sizeof(bad_aligns) / sizeof(bad_aligns[0]); i++) {
		size_t a = hide_size(bad_aligns[i]);
		p = sentinel;
		int rc = posix_memalign(&p, a, 16);
		CHECKF(rc == EINVAL, "posix_memalign(align %zu) = %d, want EINVAL", a, rc);
		CHECKF(p == sentinel, "posix_memalign(align %zu) changed *memptr to %p", a, p);
		if (rc == 0 && p != sentinel)
			free(p);
		p = sentinel;
		rc = sheaf_posix_memalign(&p, a, 16);
		CHECKF(rc == EINVAL && p == sentinel, "sheaf_posix_memalign(align %zu) = %d, %p", a,
		       rc, p);
		if (rc == 0 && p != sentinel)
			free(p);
	}
	p = sentinel;
	int rc = posix_memalign(&p, 16, hide_size(SIZE_MAX));
	CHECKF(rc == ENOMEM && p == sentinel, "posix_memalign(16, SIZE_MAX) = %d, %p", rc, p);
	p = sentinel;
	rc = posix_memalign(&p, 4096, hide_size(SIZE_MAX - 100));
	CHECKF(rc == ENOMEM && p == sentinel, "posix_memalign(4096, SIZE_MAX-100) = %d, %p", rc, p);
	p = sentinel;
	rc = posix_memalign(&p, (size_t)1 << 20, hide_size((size_t)PTRDIFF_MAX));
	CHECKF(rc == ENOMEM && p == sentinel, "posix_memalign(1M, PTRDIFF_MAX) = %d, %p", rc, p);

	/* aligned_alloc: alignment not a power of two (or 0) is EINVAL. */
	static const size_t bad_aa[] = { 0, 3, 24, 100 };
	for (size_t i = 0; i < sizeof(bad_aa) / sizeof(bad_aa[0]); i++) {
		errno = 0;
		p = aligned_alloc(hide_size(bad_aa[i]), 16);
		CHECKF(p == NULL && errno == EINVAL, "aligned_alloc(%zu, 16) = %p, errno %d",
		       bad_aa[i], p, errno);
		free(p);
		errno = 0;
		p = sheaf_aligned_alloc(hide_size(bad_aa[i]), 16);
		CHECKF(p == NULL && errno == EINVAL, "sheaf_aligned_alloc(%zu, 16) = %p, errno %d",
		       bad_aa[i], p, errno);
		free(p);
	}
	errno = 0;
	p = aligned_alloc(64, hide_size(SIZE_MAX));
	CHECKF(p == NULL && errno == ENOMEM, "aligned_alloc(64, SIZE_MAX) = %p, errno %d", p, errno);

	/* The largest power of two is a valid alignment that no mapping can have. */
	const size_t top = (size_t)1 << (sizeof(size_t) * 8 - 1);
	errno = 0;
	p = aligned_alloc(hide_size(top), 16);
	CHECKF(p == NULL && errno == ENOMEM, "aligned_alloc(2^63, 16) = %p, errno %d", p, errno);
	errno = 0;
	p = memalign(hide_size(top), 16);
	CHECKF(p == NULL && errno == ENOMEM, "memalign(2^63, 16) = %p, errno %d", p, errno);
	p = sentinel;
	rc = posix_memalign(&p, hide_size(top), 16);
	CHECKF(rc == ENOMEM && p == sentinel, "posix_memalign(2^63, 16) = %d, %p", rc, p);
	p = sentinel;
	rc = posix_memalign(&p, hide_size(top / 2), hide_size(top));
	CHECKF(rc == ENOMEM && p == sentinel, "posix_memalign(2^62, 2^63) = %d, %p", rc, p);

	/* memalign: an alignment above SIZE_MAX/2+1 cannot be a power of two. */
	errno = 0;
	p = memalign(hide_size(SIZE_MAX / 2 + 2), 16);
	CHECKF(p == NULL && errno == EINVAL, "memalign(SIZE_MAX/2+2, 16) = %p, errno %d", p, errno);
	errno = 0;
	p = memalign(hide_size(SIZE_MAX), 16);
	CHECKF(p == NULL && errno == EINVAL, "memalign(SIZE_MAX, 16) = %p, errno %d", p, errno);
	errno = 0;
	p = sheaf_memalign(hide_size(SIZE_MAX / 2 + 2), 16);
	CHECKF(p == NULL && errno == EINVAL, "sheaf_memalign(SIZE_MAX/2+2, 16) = %p, errno %d", p,
	       errno);
	errno = 0;
	p = memalign(64, hide_size(SIZE_MAX - 10));
	CHECKF(p == NULL && errno == ENOMEM, "memalign(64, SIZE_MAX-10) = %p, errno %d", p, errno);
	errno = 0;
	p = valloc(hide_size(SIZE_MAX - 10));
	CHECKF(p == NULL && errno == ENOMEM, "valloc(SIZE_MAX-10) = %p, errno %d", p, errno);
	errno = 0;
	p = pvalloc(hide_size(SIZE_MAX - 10));
	CHECKF(p == NULL && errno == ENOMEM, "pvalloc(SIZE_MAX-10) = %p, errno %d", p, errno);
}

/* ------------------------------------------------ zero sizes and NULL --- */

static void test_zero_and_null(void)
{
	enum { N = 32 };
	void *z[N];
	struct sheaf_stats before = stats();

	/* malloc(0): non-NULL, unique, freeable. */
	for (int i = 0; i < N; i++) {
		z[i] = hide(malloc(hide_size(0)));
		CHECKF(z[i] != NULL, "malloc(0) #%d returned NULL", i);
		for (int j = 0; j < i; j++)
			CHECKF(z[i] != z[j], "malloc(0) returned %p twice", z[i]);
	}
	for (int i = 0; i < N; i++)
		free(z[i]);
	void *c0 = hide(calloc(0, 10)), *c1 = hide(calloc(10, 0));
	CHECK(c0 != NULL && c1 != NULL && c0 != c1);
	free(c0);
	free(c1);

	/* realloc(NULL, n) behaves as malloc(n). */
	struct sheaf_stats s0 = stats();
	uint8_t *p = realloc(NULL, 100);
	struct sheaf_stats s1 = stats();
	CHECK(p != NULL && aligned(p, 16) && sheaf_malloc_usable_size(p) >= 100);
	CHECK(s1.allocs - s0.allocs == 1);

	/* realloc(p, 0) frees p; a non-NULL result is a fresh unique block. */
	void *other = hide(malloc(0));
	REQUIRE(other != NULL);
	void *r = realloc(p, hide_size(0));
	CHECKF(r != other, "realloc(p, 0) = %p, the same as a live block", r);
	free(r);
	free(other);
	r = sheaf_realloc(sheaf_malloc(5000), 0);
	sheaf_free(r);

	free(NULL);
	struct sheaf_stats after = stats();
	CHECKF(live(&after) == live(&before), "zero-size blocks leaked: live %lld -> %lld",
	       (long long)live(&before), (long long)live(&after));
}

/* ------------------------------------------------------------ realloc --- */

static size_t build_sizes(size_t *out, size_t cap)
{
	size_t n = 0;
	size_t max = quick ? 1u << 20 : 4u << 20;

	for (size_t s = 8; s <= max && n < cap; s = quick ? s * 2 + 8 : s + s / 4 + 8)
		out[n++] = s;
	/* Both sides of the small/large boundary, exactly. */
	const size_t edges[] = { 32752, 32760, 32767, 32768, 32769, 32784, 36864, 65536,
					 max };
	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]) && n < cap; i++)
		out[n++] = edges[i];
	/* sort (insertion: tiny) and drop duplicates */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
			size_t t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (m == 0 || out[m - 1] != out[i])
			out[m++] = out[i];
	return m;
}

static void realloc_walk(const char *name, void *(*re)(void *, size_t), const size_t *sizes,
			 size_t nsizes)
{
	uint8_t *p = re(NULL, sizes[0]);
	size_t cur = sizes[0];

	REQUIRE(p != NULL);
	fill(p, 0, cur, 6);
	/* up, then down */
	for (size_t k = 1; k < 2 * nsizes - 1; k++) {
		size_t next = k < nsizes ? sizes[k] : sizes[2 * nsizes - 2 - k];
		uint8_t *q = re(p, next);
		CHECKF(q != NULL, "%s(%zu -> %zu) returned NULL", name, cur, next);
		if (!q)
			break;
		size_t keep = cur < next ? cur : next;
		size_t bad = verify(q, 0, keep, 6);
		CHECKF(bad == SIZE_MAX, "%s(%zu -> %zu): byte %zu lost", name, cur, next, bad);
		CHECKF(aligned(q, malloc_align(next)), "%s(%zu -> %zu) = %p misaligned", name, cur,
		       next, (void *)q);
		CHECKF(sheaf_malloc_usable_size(q) >= next, "%s(%zu -> %zu): usable %zu", name, cur,
		       next, sheaf_malloc_usable_size(q));
		if (next > cur)
			fill(q, cur, next, 6);
		p = q;
		cur = next;
	}
	free(p);
}

static void test_realloc(void)
{
	size_t sizes[128];
	size_t n = build_sizes(sizes, 128);
	struct sheaf_stats before = stats();

	realloc_walk("realloc", realloc, sizes, n);
	realloc_walk("sheaf_realloc", sheaf_realloc, sizes, n);
	if (callable("__libc_realloc"))
		realloc_walk("__libc_realloc", __libc_realloc, sizes, n);

	/* Every jump between representative sizes, both ways. */
	static const size_t reps[] = { 8, 24, 100, 1024, 4096, 32767, 32768, 32769, 40000,
				       (1u << 20) + 3, 4u << 20 };
	for (size_t i = 0; i < sizeof(reps) / sizeof(reps[0]); i++)
		for (size_t j = 0; j < sizeof(reps) / sizeof(reps[0]); j++) {
			size_t a = reps[i], b = reps[j];
			if (quick && (a > 65536 || b > 65536))
				continue;
			uint8_t *p = malloc(a);
			REQUIRE(p != NULL);
			fill(p, 0, a, 7);
			uint8_t *q = realloc(p, b);
			CHECKF(q != NULL, "realloc(%zu -> %zu) returned NULL", a, b);
			if (!q) {
				free(p);
				continue;
			}
			size_t bad = verify(q, 0, a < b ? a : b, 7);
			CHECKF(bad == SIZE_MAX, "realloc(%zu -> %zu): byte %zu lost", a, b, bad);
			/* Growing in place must not expose stale bytes as ours: write the rest. */
			if (b > a)
				fill(q, a, b, 7);
			CHECK(verify(q, 0, b, 7) == SIZE_MAX);
			free(q);
		}

	/* Large blocks: shrink (the tail is cut off), then grow again (remapped),
	 * and back and forth across the small/large boundary. */
	static const size_t zigzag[] = { 4u << 20, 1u << 20, 3u << 20, 40000, 2u << 20, 100,
					 (5u << 20) + 1, 32769, 32768, 600000 };
	size_t cur = quick ? 1u << 20 : zigzag[0];
	uint8_t *z = malloc(cur);
	REQUIRE(z != NULL);
	fill(z, 0, cur, 11);
	for (size_t i = 1; i < sizeof(zigzag) / sizeof(zigzag[0]); i++) {
		size_t a = cur, b = zigzag[i];
		if (quick && b > (1u << 20))
			b = (1u << 20) - i;
		uint8_t *q = realloc(z, b);
		CHECKF(q != NULL, "realloc(%zu -> %zu) returned NULL", a, b);
		if (!q)
			break;
		size_t bad = verify(q, 0, a < b ? a : b, 11);
		CHECKF(bad == SIZE_MAX, "zigzag realloc(%zu -> %zu): byte %zu lost", a, b, bad);
		if (b > a)
			fill(q, a, b, 11);
		z = q;
		cur = b;
	}
	free(z);

	/* Blocks from the aligned allocators grow and shrink too. */
	uint8_t *p = aligned_alloc(4096, 5000);
	REQUIRE(p != NULL);
	fill(p, 0, 5000, 8);
	p = realloc(p, 50000);
	REQUIRE(p != NULL);
	CHECK(verify(p, 0, 5000, 8) == SIZE_MAX);
	p = realloc(p, 10);
	REQUIRE(p != NULL);
	CHECK(verify(p, 0, 10, 8) == SIZE_MAX);
	free(p);
	size_t big = quick ? 256u << 10 : 3u << 20;
	p = aligned_alloc(1u << 20, big);
	REQUIRE(p != NULL);
	CHECK(aligned(p, 1u << 20));
	fill(p, 0, big, 12);
	p = realloc(p, 2 * big);
	REQUIRE(p != NULL);
	CHECK(verify(p, 0, big, 12) == SIZE_MAX);
	p = realloc(p, big / 8);
	REQUIRE(p != NULL);
	CHECK(verify(p, 0, big / 8, 12) == SIZE_MAX);
	p = realloc(p, 10);
	REQUIRE(p != NULL);
	CHECK(verify(p, 0, 10, 12) == SIZE_MAX);
	free(p);

	struct sheaf_stats after = stats();
	CHECKF(live(&after) == live(&before), "realloc tests leaked: live %lld -> %lld",
	       (long long)live(&before), (long long)live(&after));
}

/* -------------------------------------------------------- usable size --- */

static void test_usable_size(void)
{
	enum { K = 6 };
	uint8_t *b[K];
	size_t w[K];

	/*
	 * K blocks of one size live at once, each written in full (up to its
	 * usable size) with its own pattern: a usable size reaching into the
	 * neighbouring block shows up as a broken pattern.
	 */
	size_t max = quick ? 1u << 20 : 4u << 20;

	for (size_t n = 0; n <= max; n = n < 1100 ? n + (quick ? 7 : 1) : quick ? n * 2 : n * 5 / 4) {
		for (int k = 0; k < K; k++) {
			b[k] = malloc(n);
			REQUIRE(b[k] != NULL);
			size_t u = sheaf_malloc_usable_size(b[k]);
			CHECKF(u >= n, "malloc(%zu): usable size %zu", n, u);
			w[k] = writable(b[k], n);
			fill(b[k], 0, w[k], (unsigned int)(k + 10));
		}
		for (int k = 0; k < K; k++) {
			size_t bad = verify(b[k], 0, w[k], (unsigned int)(k + 10));
			CHECKF(bad == SIZE_MAX, "malloc(%zu) block %d: byte %zu of %zu usable bad",
			       n, k, bad, w[k]);
			free(b[k]);
		}
	}
}

/* ---------------------------------------------------- calloc and reuse --- */

/*
 * Small callocs are zeroed inline with overlapping stores (lib/malloc.c,
 * zero_small()): every size up to past the inline limit, on a reused
 * dirty block, is zero in [0, n) and - when the same block comes back -
 * untouched after n (a debugged class keeps its red zone there), but for
 * the first word, where malloc() itself clears the free marker.
 */
static void test_calloc_small_sizes(void)
{
	for (size_t n = 0; n <= 160; n++) {
		unsigned char *p = malloc(n);
		REQUIRE(p != NULL);
		size_t usable = writable(p, n);
		memset(p, 0xee, usable);
		free(hide(p));
		unsigned char *q = calloc(1, n);
		REQUIRE(q != NULL);
		CHECKF(all_zero(q, n), "calloc(1, %zu) not zeroed", n);
		if (q == p && !quick) {
			bool slack_kept = true;
			for (size_t i = n > sizeof(void *) ? n : sizeof(void *); i < usable; i++)
				slack_kept &= q[i] == 0xee;
			CHECKF(slack_kept, "calloc(1, %zu) wrote past the requested size", n);
		}
		free(q);
	}
}

static void test_calloc_reuse(void)
{
	static const size_t sizes[] = { 1, 16, 24, 48, 100, 1000, 4096, 20000, 32768, 40000,
					300000, 1u << 20, 3u << 20 };
	enum { BATCH_MAX = 24 };
	void *batch[BATCH_MAX];
	int rounds = quick ? 3 : 40;
	int nbatch = quick ? 4 : BATCH_MAX;

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t n = sizes[s];
		/* One at a time: the freed dirty block is the likeliest to come back. */
		for (int r = 0; r < rounds; r++) {
			void *p = malloc(n);
			REQUIRE(p != NULL);
			memset(p, 0xff, writable(p, n));
			free(hide(p));
			void *q = (r & 1) ? calloc(n, 1) : sheaf_calloc(1, n);
			CHECKF(q && all_zero(q, n), "calloc(%zu) round %d (reusing %p = %p) not zeroed",
			       n, r, p, q);
			free(q);
		}
		/* A batch: dirty many, free them, calloc the same number back. */
		for (int k = 0; k < nbatch; k++) {
			batch[k] = malloc(n);
			REQUIRE(batch[k] != NULL);
			memset(batch[k], 0xa5, writable(batch[k], n));
		}
		for (int k = 0; k < nbatch; k++)
			free(hide(batch[k]));
		for (int k = 0; k < nbatch; k++) {
			batch[k] = calloc(1, n);
			CHECKF(batch[k] && all_zero(batch[k], n), "calloc(%zu) batch %d not zeroed", n,
			       k);
		}
		for (int k = 0; k < nbatch; k++)
			free(batch[k]);
	}
	/* Dirtied by realloc-grown blocks, and calloc(nmemb, size) with nmemb > 1. */
	for (int r = 0; r < rounds; r++) {
		uint8_t *p = malloc(64);
		REQUIRE(p != NULL);
		memset(p, 0x77, 64);
		p = realloc(p, 3000);
		REQUIRE(p != NULL);
		memset(p, 0x77, 3000);
		free(hide(p));
		uint32_t *a = calloc(750, sizeof(uint32_t));
		CHECK(a && all_zero(a, 3000));
		free(a);
	}
}

/* ------------------------------------------------ trim, mallopt, info --- */

static void test_trim_mallopt(void)
{
	enum { N = 4000 };
	void **v = malloc(N * sizeof(void *));
	REQUIRE(v != NULL);

	for (int i = 0; i < N; i++) {
		v[i] = malloc(i % 50 == 0 ? 100000 : (size_t)(i % 700) + 1);
		REQUIRE(v[i] != NULL);
		memset(v[i], 1, (size_t)(i % 50 == 0 ? 100000 : (i % 700) + 1));
	}
	for (int i = 0; i < N; i++)
		free(v[i]);
	int r = malloc_trim(0);
	CHECKF(r == 0 || r == 1, "malloc_trim(0) = %d", r);
	r = sheaf_malloc_trim(0);
	CHECKF(r == 0 || r == 1, "sheaf_malloc_trim(0) = %d", r);
	r = malloc_trim(1u << 20);
	CHECKF(r == 0 || r == 1, "malloc_trim(1M) = %d", r);
	/* Still usable afterwards, including reuse of what was trimmed. */
	for (int i = 0; i < N; i++) {
		size_t n = i % 50 == 0 ? 100000 : (size_t)(i % 700) + 1;
		v[i] = malloc(n);
		REQUIRE(v[i] != NULL);
		fill(v[i], 0, n, (unsigned int)i);
	}
	for (int i = 0; i < N; i++) {
		size_t n = i % 50 == 0 ? 100000 : (size_t)(i % 700) + 1;
		CHECKF(verify(v[i], 0, n, (unsigned int)i) == SIZE_MAX, "block %d after trim", i);
		free(v[i]);
	}
	free(v);

	static const struct {
		int param, value;
	} opts[] = {
		{ M_MXFAST, 64 }, { M_NLBLKS, 1 }, { M_GRAIN, 1 }, { M_KEEP, 1 },
		{ M_TRIM_THRESHOLD, 1 << 20 }, { M_TOP_PAD, 1 << 16 }, { M_MMAP_THRESHOLD, 1 << 20 },
		{ M_MMAP_MAX, 1 << 16 }, { M_CHECK_ACTION, 3 }, { M_PERTURB, 0 },
		{ M_ARENA_TEST, 8 }, { M_ARENA_MAX, 4 },
	};
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		int rc = mallopt(opts[i].param, opts[i].value);
		CHECKF(rc == 1, "mallopt(%d, %d) = %d", opts[i].param, opts[i].value, rc);
	}
	/* Ignored, so a perturb byte must not show up in fresh memory either. */
	void *p = calloc(1, 4096);
	CHECK(p && all_zero(p, 4096));
	free(p);
}

static void test_mallinfo(void)
{
	enum { N = 1000, SIZE = 1000, LARGE_N = 4 };
	static void *blocks[N];
	const size_t large = 4u << 20;

	struct mallinfo2 m0 = mallinfo2();
	for (int i = 0; i < N; i++) {
		blocks[i] = malloc(SIZE);
		REQUIRE(blocks[i] != NULL);
	}
	struct mallinfo2 m1 = mallinfo2();
	size_t grew = m1.uordblks - m0.uordblks;
	CHECKF(m1.uordblks >= m0.uordblks && grew >= (size_t)N * SIZE && grew <= (size_t)N * SIZE * 2,
	       "mallinfo2.uordblks grew by %zu for %d x %d B", grew, N, SIZE);
	for (int i = 0; i < N; i++)
		free(blocks[i]);
	struct mallinfo2 m2 = mallinfo2();
	CHECKF(m2.uordblks <= m0.uordblks + (size_t)N * SIZE / 10,
	       "mallinfo2.uordblks %zu -> %zu -> %zu: did not shrink back", m0.uordblks, m1.uordblks,
	       m2.uordblks);
	CHECKF(m1.arena >= m1.uordblks, "mallinfo2: arena %zu < uordblks %zu", m1.arena, m1.uordblks);

	/* Large (page-mapped) blocks show in hblkhd. */
	for (int i = 0; i < LARGE_N; i++) {
		blocks[i] = malloc(large);
		REQUIRE(blocks[i] != NULL);
	}
	struct mallinfo2 m3 = mallinfo2();
	CHECKF(m3.hblkhd >= m2.hblkhd + LARGE_N * large, "mallinfo2.hblkhd %zu -> %zu for %d x %zu B",
	       m2.hblkhd, m3.hblkhd, LARGE_N, large);
	for (int i = 0; i < LARGE_N; i++)
		free(blocks[i]);
	struct mallinfo2 m4 = mallinfo2();
	CHECKF(m4.hblkhd + LARGE_N * large / 2 <= m3.hblkhd, "mallinfo2.hblkhd %zu -> %zu after free",
	       m3.hblkhd, m4.hblkhd);

	/* mallinfo (int fields): same numbers where they fit.  Called through a
	 * pointer because glibc's header marks it deprecated. */
	if (callable("mallinfo")) {
		struct mallinfo (*mi)(void);
		*(void **)&mi = dlsym(RTLD_DEFAULT, "mallinfo");
		struct mallinfo o0 = mi();
		for (int i = 0; i < N; i++) {
			blocks[i] = malloc(SIZE);
			REQUIRE(blocks[i] != NULL);
		}
		struct mallinfo o1 = mi();
		long d = (long)o1.uordblks - (long)o0.uordblks;
		CHECKF(d >= (long)N * SIZE && d <= 2L * N * SIZE, "mallinfo.uordblks grew by %ld", d);
		for (int i = 0; i < N; i++)
			free(blocks[i]);
	}
}

/* Runs fn with fd 1 and fd 2 going to temporary files; returns their sizes. */
static void capture(void (*fn)(void), long *out_bytes, long *err_bytes, char *err_text,
		    size_t err_cap)
{
	FILE *o = tmpfile(), *e = tmpfile();
	REQUIRE(o && e);
	fflush(stdout);
	fflush(stderr);
	int saved_out = dup(1), saved_err = dup(2);
	REQUIRE(saved_out >= 0 && saved_err >= 0);
	REQUIRE(dup2(fileno(o), 1) == 1 && dup2(fileno(e), 2) == 2);
	fn();
	fflush(stdout);
	fflush(stderr);
	REQUIRE(dup2(saved_out, 1) == 1 && dup2(saved_err, 2) == 2);
	close(saved_out);
	close(saved_err);
	*out_bytes = lseek(fileno(o), 0, SEEK_END);
	*err_bytes = lseek(fileno(e), 0, SEEK_END);
	ssize_t got = pread(fileno(e), err_text, err_cap - 1, 0);
	err_text[got > 0 ? got : 0] = '\0';
	fclose(o);
	fclose(e);
}

static void call_malloc_stats(void)
{
	malloc_stats();
}

static void test_stats_info(void)
{
	char text[4096];
	long out_bytes = 0, err_bytes = 0;

	void *keep = malloc(12345);
	capture(call_malloc_stats, &out_bytes, &err_bytes, text, sizeof(text));
	CHECKF(err_bytes > 0, "malloc_stats() wrote nothing to stderr");
	CHECKF(out_bytes == 0, "malloc_stats() wrote %ld bytes to stdout", out_bytes);

	FILE *f = tmpfile();
	REQUIRE(f != NULL);
	int rc = malloc_info(0, f);
	CHECKF(rc == 0, "malloc_info(0, f) = %d", rc);
	fflush(f);
	rewind(f);
	size_t got = fread(text, 1, sizeof(text) - 1, f);
	text[got] = '\0';
	CHECKF(strncmp(text, "<malloc", 7) == 0, "malloc_info output starts with \"%.40s\"", text);
	CHECKF(strstr(text, "</malloc>") != NULL || got == sizeof(text) - 1,
	       "malloc_info output has no </malloc>");
	fclose(f);

	f = tmpfile();
	REQUIRE(f != NULL);
	errno = 0;
	rc = malloc_info(1, f);
	CHECKF(rc == -1 && errno == EINVAL, "malloc_info(1, f) = %d, errno %d", rc, errno);
	fflush(f);
	CHECKF(ftell(f) == 0, "malloc_info(1, f) wrote %ld bytes", ftell(f));
	fclose(f);
	free(keep);
}

int main(void)
{
	quick = getenv("SHEAF_VALGRIND_QUICK") != NULL;
	page_size = (size_t)sysconf(_SC_PAGESIZE);

	test_symbols();
	/* mallinfo first: later tests leave large mappings cached. */
	test_mallinfo();
	test_each_function();
	test_alignment();
	test_errors();
	test_zero_and_null();
	test_realloc();
	test_usable_size();
	test_calloc_reuse();
	test_calloc_small_sizes();
	test_trim_mallopt();
	test_stats_info();
	return check_done("test_api");
}
