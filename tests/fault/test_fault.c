/*
 * test_fault.c - sheaf when memory or threads cannot be had.
 *
 * Links the core statically (like the unit tests) for the fault-injection
 * hook page_fail_next(n), which makes the page source's next n mmaps fail.
 * Each case runs in a fresh process (this program re-executes itself with
 * "--case NAME"), so that it starts from an allocator that has mapped
 * nothing yet and a process limit set by one case cannot leak into the next.
 *
 * What it proves:
 *   inject_large   with the next mmap failing, malloc / calloc /
 *                  aligned_alloc / memalign of large sizes return NULL with
 *                  errno ENOMEM, posix_memalign returns ENOMEM and leaves
 *                  *memptr alone, realloc of a small block to a large size
 *                  returns NULL + ENOMEM and the old block stays intact;
 *                  the next call, without injection, succeeds; allocs - frees
 *                  is back at its start value at the end;
 *   inject_small   with every mmap failing, allocating any small size class
 *                  until it fails ends in NULL + ENOMEM once the slabs and
 *                  the current 64 MiB region are used up (for 32 KiB blocks
 *                  at most a few thousand), every block handed out before
 *                  keeps its contents, and once the failures stop each class
 *                  allocates again; everything can be freed;
 *   inject_cache   the same for slab caches (with and without sheaves, with
 *                  a constructor): sheaf_cache_alloc() NULL + ENOMEM,
 *                  sheaf_cache_alloc_bulk() 0 + ENOMEM and all or nothing
 *                  (objects_active unchanged), then both work again and the
 *                  cache can be destroyed;
 *   rlimit_as      a real limit: RLIMIT_AS at the current size + 256 MiB,
 *                  then small and large blocks are allocated until malloc
 *                  returns NULL (errno ENOMEM); calloc, posix_memalign,
 *                  realloc and a cache at the limit fail cleanly or succeed;
 *                  every block is intact; after freeing everything the same
 *                  sizes can be allocated again (half as many, under the
 *                  same limit);
 *   rlimit_tight   RLIMIT_AS just above what the process uses before its
 *                  first allocation: sheaf cannot even map its first 64 MiB
 *                  region; every allocation function fails with NULL +
 *                  ENOMEM (no crash, no half-made state); raising the limit
 *                  again makes everything work;
 *   rcu_nothread_seccomp, rcu_nothread_rlimit
 *                  rcu_free() while the drain thread cannot be created:
 *                  rcu_free() of small, large and cache objects (with and
 *                  without sheaves) never fails or blocks, and
 *                  rcu_free_barrier() and sheaf_cache_rcu_barrier() return 0
 *                  having freed every object themselves (rcu_pending 0,
 *                  rcu_objects_freed grew by their number, allocs - frees
 *                  back at its start value, the process still has a single
 *                  thread), and sheaf_cache_destroy() works.  Thread
 *                  creation is made impossible two ways: a seccomp filter
 *                  that fails clone/clone3 with EAGAIN (reliable, also as
 *                  root), and RLIMIT_AS so tight that pthread_create()
 *                  cannot map a stack (skipped when a stack can still be
 *                  had).  RLIMIT_NPROC is not used: root ignores it.
 *
 * Under AddressSanitizer (tests/sanitize/run.sh) the RLIMIT_AS cases skip:
 * ASan reserves terabytes of shadow address space.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check.h"
#include "internal.h"
#include "sheaf/rcu.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define MIB ((size_t)1 << 20)

/* ------------------------------------------------------------- helpers */
static int64_t live(void)
{
	struct sheaf_stats st;
	sheaf_stats_get(&st);
	return (int64_t)(st.allocs - st.frees);
}

static struct sheaf_stats stats(void)
{
	struct sheaf_stats st;
	sheaf_stats_get(&st);
	return st;
}

/* First and last word of a block carry a value derived from its address. */
static uint64_t tag(const void *p, size_t n)
{
	return ((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) ^ n;
}

static void mark(void *p, size_t n)
{
	uint64_t t = tag(p, n);
	memcpy(p, &t, n < 8 ? n : 8);
	if (n >= 16)
		memcpy((char *)p + n - 8, &t, 8);
}

static bool marked(const void *p, size_t n)
{
	uint64_t t = tag(p, n), a = 0, b = t;
	memcpy(&a, p, n < 8 ? n : 8);
	if (n < 8) {
		uint64_t want = 0;
		memcpy(&want, &t, n);
		return a == want;
	}
	if (n >= 16)
		memcpy(&b, (const char *)p + n - 8, 8);
	return a == t && b == t;
}

/* Room for many pointers without using the allocator under test. */
static void **ptr_array(size_t n)
{
	void *a = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	REQUIRE(a != MAP_FAILED);
	return a;
}

static long vm_size_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

static int threads_in_process(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	if (d)
		closedir(d);
	return n;
}

static void set_as_limit(rlim_t soft)
{
	struct rlimit rl;
	REQUIRE(getrlimit(RLIMIT_AS, &rl) == 0);
	rl.rlim_cur = soft;
	REQUIRE(setrlimit(RLIMIT_AS, &rl) == 0);
}

/* ------------------------------------------------------------ madvise */
/*
 * madvise(MADV_DONTNEED) failing when slabs go back to the page source:
 * the runs are reused with their old contents, so calloc must still zero
 * and every block must hold what was written; only the memory stays
 * resident.
 */
static int case_madvise(void)
{
	enum { N = 20000 };
	char **p = (char **)ptr_array(N);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			p[i] = sheaf_malloc(200);
			REQUIRE(p[i]);
			memset(p[i], 0xa5, 200);
		}
		for (int i = 0; i < N; i++)
			sheaf_free(p[i]);
		uint64_t f0 = page_madvise_failures();
		page_fail_madvise_next(1000);
		sheaf_malloc_trim(0);   /* empty slabs back: every madvise fails */
		page_fail_madvise_next(0);
		CHECKF(page_madvise_failures() > f0, "round %d: no slab went back (no madvise)", round);
		int dirty = 0;
		for (int i = 0; i < N; i++) {
			p[i] = sheaf_calloc(1, 200);
			REQUIRE(p[i]);
			for (int k = 0; k < 200; k++)
				dirty |= p[i][k];
			memset(p[i], i & 0x7f, 200);
		}
		CHECKF(!dirty, "round %d: calloc returned dirty memory from a reused run", round);
		for (int i = 0; i < N; i++) {
			CHECKF(p[i][0] == (char)(i & 0x7f) && p[i][199] == (char)(i & 0x7f),
			       "round %d: block %d lost its contents", round, i);
			sheaf_free(p[i]);
		}
	}
	munmap(p, N * sizeof(*p));
	return check_done("madvise");
}

/* ------------------------------------------------------- inject_large */
static int case_inject_large(void)
{
	static const size_t sizes[] = { 40000, MIB, 3 * MIB + 5 };
	void *const sentinel = (void *)(uintptr_t)0x5eaf;
	int64_t live0 = live();

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		sheaf_malloc_trim(0);   /* no cached large mapping may serve it */
		void *p;

		page_fail_next(1);
		errno = 0;
		p = sheaf_malloc(n);
		CHECKF(p == NULL && errno == ENOMEM, "malloc(%zu) under a failing mmap = %p, errno %d",
		       n, p, errno);
		page_fail_next(1);
		errno = 0;
		p = sheaf_calloc(1, n);
		CHECKF(p == NULL && errno == ENOMEM, "calloc(1, %zu) = %p, errno %d", n, p, errno);
		page_fail_next(1);
		errno = 0;
		p = sheaf_aligned_alloc(64 << 10, n);
		CHECKF(p == NULL && errno == ENOMEM, "aligned_alloc(64K, %zu) = %p, errno %d", n, p, errno);
		page_fail_next(1);
		errno = 0;
		p = sheaf_memalign(MIB, 100);
		CHECKF(p == NULL && errno == ENOMEM, "memalign(1M, 100) = %p, errno %d", p, errno);
		page_fail_next(1);
		p = sentinel;
		int rc = sheaf_posix_memalign(&p, 8192, n);
		CHECKF(rc == ENOMEM && p == sentinel, "posix_memalign(8K, %zu) = %d, %p", n, rc, p);

		/* realloc small -> large: NULL + ENOMEM, the old block intact */
		char *s = sheaf_malloc(300);
		REQUIRE(s != NULL);
		memset(s, 0x5a, 300);
		page_fail_next(1);
		errno = 0;
		void *r = sheaf_realloc(s, n);
		CHECKF(r == NULL && errno == ENOMEM, "realloc(300 -> %zu) = %p, errno %d", n, r, errno);
		bool intact = true;
		for (int k = 0; k < 300; k++)
			intact &= s[k] == 0x5a;
		CHECKF(intact, "realloc(300 -> %zu) failed and changed the old block", n);
		page_fail_next(0);

		/* without injection: everything works again */
		p = sheaf_malloc(n);
		CHECKF(p != NULL, "malloc(%zu) after the failure: NULL, errno %d", n, errno);
		if (p) {
			mark(p, n);
			r = sheaf_realloc(s, n);
			CHECKF(r != NULL, "realloc(300 -> %zu) after the failure: NULL", n);
			if (r) {
				s = r;
				CHECK(((unsigned char *)s)[299] == 0x5a);
			}
			CHECK(marked(p, n));
			sheaf_free(p);
		}
		sheaf_free(s);
		p = NULL;
		rc = sheaf_posix_memalign(&p, 8192, n);
		CHECKF(rc == 0 && p && ((uintptr_t)p & 8191) == 0, "posix_memalign after failure: %d", rc);
		sheaf_free(p);
	}
	page_fail_next(0);
	CHECKF(live() == live0, "allocs - frees %lld -> %lld", (long long)live0, (long long)live());
	return check_done("fault inject_large");
}

/* ------------------------------------------------------- inject_small */
static int case_inject_small(void)
{
	/* 32 KiB first: it uses up the 64 MiB region fastest; the others then
	 * only have their partly used slabs and carved-off run tails left. */
	static const size_t sizes[] = { 32768, 4096, 1000, 100, 16 };
	enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
	const size_t cap = 8u << 20;
	void **v = ptr_array(cap);
	size_t n = 0, count[NS];
	/* Each class once first: the first region is mapped and each class
	 * has a slab, as in a process that has been running a while. */
	for (int c = 0; c < NS; c++)
		sheaf_free(sheaf_malloc(sizes[c]));
	int64_t live0 = live();

	page_fail_next(UINT_MAX);
	for (int c = 0; c < NS; c++) {
		count[c] = 0;
		for (;;) {
			errno = 0;
			void *p = sheaf_malloc(sizes[c]);
			if (!p) {
				CHECKF(errno == ENOMEM, "malloc(%zu) failed with errno %d, not ENOMEM",
				       sizes[c], errno);
				break;
			}
			mark(p, sizes[c]);
			v[n++] = p;
			count[c]++;
			if (n == cap)
				break;
		}
		CHECKF(n < cap, "malloc(%zu) never failed with every mmap failing (%zu blocks)",
		       sizes[c], count[c]);
		printf("  malloc(%zu): %zu blocks before NULL + ENOMEM\n", sizes[c], count[c]);
	}
	/* 64 MiB of 32 KiB blocks is 2048; a few more for slabs already there */
	CHECKF(count[0] > 0 && count[0] <= 2048 + 64,
	       "%zu blocks of 32 KiB from what was left of one 64 MiB region", count[0]);
	/* other entry points fail the same way */
	errno = 0;
	void *p = sheaf_calloc(1, 32768);
	CHECKF(p == NULL && errno == ENOMEM, "calloc(1, 32768) = %p, errno %d", p, errno);
	errno = 0;
	p = sheaf_memalign(4096, 32768);
	CHECKF(p == NULL && errno == ENOMEM, "memalign(4096, 32768) = %p, errno %d", p, errno);
	/* a large block still fails too */
	errno = 0;
	p = sheaf_malloc(MIB);
	CHECKF(p == NULL && errno == ENOMEM, "malloc(1M) = %p, errno %d", p, errno);

	size_t k = 0;
	for (int c = 0; c < NS; c++)
		for (size_t j = 0; j < count[c]; j++, k++)
			if (!marked(v[k], sizes[c])) {
				CHECKF(false, "block %p (%zu bytes) changed", v[k], sizes[c]);
				break;
			}

	page_fail_next(0);
	for (int c = 0; c < NS; c++) {
		p = sheaf_malloc(sizes[c]);
		CHECKF(p != NULL, "malloc(%zu) once mmap works again: NULL, errno %d", sizes[c], errno);
		sheaf_free(p);
	}
	for (size_t i = 0; i < n; i++)
		sheaf_free(v[i]);
	p = sheaf_malloc(MIB);
	CHECK(p != NULL);
	sheaf_free(p);
	CHECKF(live() == live0, "allocs - frees %lld -> %lld", (long long)live0, (long long)live());
	CHECK(sheaf_malloc_trim(0) == 1);
	return check_done("fault inject_small");
}

/* ------------------------------------------------------- inject_cache */
static size_t ctor_runs;
static void ctor(void *obj)
{
	memset(obj, 0xc7, 200);
	ctor_runs++;
}

static void one_cache(const char *name, size_t size, unsigned int flags, void (*fn)(void *))
{
	struct sheaf_cache *c = sheaf_cache_create(name, size, 64, flags, fn);
	REQUIRE(c != NULL);
	const size_t cap = 1u << 20;
	void **v = ptr_array(cap);
	size_t n = 0;
	struct sheaf_cache_stats st0, st1;

	sheaf_cache_free(c, sheaf_cache_alloc(c));   /* a slab, the region mapped */
	page_fail_next(UINT_MAX);
	for (;;) {
		errno = 0;
		void *o = sheaf_cache_alloc(c);
		if (!o) {
			CHECKF(errno == ENOMEM, "%s: sheaf_cache_alloc() failed with errno %d", name, errno);
			break;
		}
		if (fn)
			CHECKF(((unsigned char *)o)[199] == 0xc7, "%s: object not constructed", name);
		v[n++] = o;
		if (n == cap)
			break;
	}
	CHECKF(n < cap, "%s: sheaf_cache_alloc() never failed", name);
	CHECKF(n >= 8, "%s: only %zu objects before the first failure", name, n);
	if (n < 8) {
		page_fail_next(0);
		return;
	}
	sheaf_cache_stats_get(c, &st0);
	errno = 0;
	void *bulk[64];
	size_t got = sheaf_cache_alloc_bulk(c, 64, bulk);
	CHECKF(got == 0 && errno == ENOMEM, "%s: alloc_bulk(64) = %zu, errno %d", name, got, errno);
	sheaf_cache_stats_get(c, &st1);
	CHECKF(st1.objects_active == st0.objects_active, "%s: a failed alloc_bulk left %zu -> %zu "
	       "objects active", name, st0.objects_active, st1.objects_active);
	/* Some objects back: a bulk allocation of fewer succeeds from them. */
	sheaf_cache_free_bulk(c, 8, v + n - 8);
	n -= 8;
	got = sheaf_cache_alloc_bulk(c, 8, bulk);
	CHECKF(got == 8, "%s: alloc_bulk(8) after 8 frees = %zu (errno %d)", name, got, errno);
	if (got == 8)
		sheaf_cache_free_bulk(c, 8, bulk);

	page_fail_next(0);
	got = sheaf_cache_alloc_bulk(c, 64, bulk);
	CHECKF(got == 64, "%s: alloc_bulk(64) once mmap works: %zu", name, got);
	if (got == 64)
		sheaf_cache_free_bulk(c, 64, bulk);
	sheaf_cache_free_bulk(c, n, v);
	sheaf_cache_stats_get(c, &st1);
	CHECKF(st1.objects_active == 0, "%s: %zu objects active at the end", name, st1.objects_active);
	CHECKF(sheaf_cache_destroy(c) == 0, "%s: destroy failed, errno %d", name, errno);
	munmap(v, cap * sizeof(void *));
}

static int case_inject_cache(void)
{
	int64_t live0 = live();
	one_cache("fault-sheaves", 2000, 0, NULL);
	one_cache("fault-nosheaves", 700, SHEAF_NO_SHEAVES, NULL);
	one_cache("fault-ctor", 5000, 0, ctor);
	CHECK(ctor_runs > 0);
	CHECKF(live() == live0, "allocs - frees %lld -> %lld", (long long)live0, (long long)live());
	return check_done("fault inject_cache");
}

/* ---------------------------------------------------------- rlimit_as */
static size_t as_size(size_t i)
{
	if (i % 7 == 3)
		return (size_t)100000 + (i % 5) * 400000;   /* 100 KB .. 1.7 MB */
	return (size_t)64 << (i % 10);                       /* 64 B .. 32 KiB */
}

static int case_rlimit_as(void)
{
	if (UNDER_ASAN)
		SKIP("RLIMIT_AS cannot be used under AddressSanitizer (shadow memory)");
	const size_t cap = 4u << 20;
	void **v = ptr_array(cap);
	sheaf_free(sheaf_malloc(16));   /* sheaf initialised, first region mapped */
	int64_t live0 = live();
	long vm = vm_size_bytes();
	REQUIRE(vm > 0);
	set_as_limit((rlim_t)vm + 256 * MIB);

	size_t n = 0;
	int err = 0;
	for (;;) {
		errno = 0;
		size_t sz = as_size(n);
		void *p = sheaf_malloc(sz);
		if (!p) {
			err = errno;
			break;
		}
		mark(p, sz);
		v[n++] = p;
		if (n == cap)
			break;
	}
	printf("  %zu blocks before malloc(%zu) returned NULL, errno %d\n", n, as_size(n), err);
	CHECKF(n < cap, "RLIMIT_AS +256 MiB: malloc never failed");
	CHECKF(err == ENOMEM, "malloc at the limit: errno %d, not ENOMEM", err);
	CHECKF(n > 100, "only %zu blocks under a 256 MiB margin", n);

	/* The other entry points at the limit: NULL + ENOMEM, or a block. */
	for (int k = 0; k < 4; k++) {
		errno = 0;
		void *p = k == 0 ? sheaf_calloc(1000, 1000) : k == 1 ? sheaf_memalign(MIB, 3 * MIB) :
			  k == 2 ? sheaf_malloc(64 * MIB) : sheaf_valloc(5 * MIB);
		CHECKF(p || errno == ENOMEM, "allocation %d at the limit: NULL with errno %d", k, errno);
		sheaf_free(p);
	}
	void *q = (void *)(uintptr_t)0x5eaf;
	int rc = sheaf_posix_memalign(&q, 1 << 16, 32 * MIB);
	CHECKF(rc == 0 || (rc == ENOMEM && q == (void *)(uintptr_t)0x5eaf),
	       "posix_memalign at the limit = %d", rc);
	if (rc == 0)
		sheaf_free(q);
	if (n > 0) {
		/* realloc of the last (small or large) block to 100 MiB */
		size_t last = as_size(n - 1);
		errno = 0;
		void *r = sheaf_realloc(v[n - 1], 100 * MIB);
		if (r) {
			CHECK(marked(r, last) || last > 32768);   /* large: tail word moved */
			sheaf_free(r);
			n--;
		} else {
			CHECKF(errno == ENOMEM, "realloc at the limit: errno %d", errno);
			CHECK(marked(v[n - 1], last));
		}
	}
	struct sheaf_cache *c = sheaf_cache_create("rlimit", 3000, 0, 0, NULL);
	if (c) {
		void *o, *objs[256];
		size_t m = 0;
		while (m < 256 && (o = sheaf_cache_alloc(c)))
			objs[m++] = o;
		CHECKF(m == 256 || errno == ENOMEM, "cache at the limit: errno %d", errno);
		sheaf_cache_free_bulk(c, m, objs);
		CHECK(sheaf_cache_destroy(c) == 0);
	} else {
		CHECKF(errno == ENOMEM, "sheaf_cache_create at the limit: errno %d", errno);
	}

	size_t bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += !marked(v[i], as_size(i));
	CHECKF(bad == 0, "%zu blocks changed at the limit", bad);
	for (size_t i = 0; i < n; i++)
		sheaf_free(v[i]);
	CHECKF(live() == live0, "allocs - frees %lld -> %lld after freeing everything",
	       (long long)live0, (long long)live());

	/* Again, under the same limit. */
	size_t again = n / 2, ok = 0;
	for (size_t i = 0; i < again; i++) {
		v[i] = sheaf_malloc(as_size(i));
		if (v[i]) {
			mark(v[i], as_size(i));
			ok++;
		}
	}
	CHECKF(ok == again, "after freeing everything, only %zu of %zu blocks could be allocated "
	       "again (errno %d)", ok, again, errno);
	for (size_t i = 0; i < again; i++) {
		if (v[i])
			CHECK(marked(v[i], as_size(i)));
		sheaf_free(v[i]);
	}
	CHECKF(live() == live0, "allocs - frees %lld -> %lld", (long long)live0, (long long)live());
	return check_done("fault rlimit_as");
}

/* ------------------------------------------------------- rlimit_tight */
static int case_rlimit_tight(void)
{
	if (UNDER_ASAN)
		SKIP("RLIMIT_AS cannot be used under AddressSanitizer (shadow memory)");
	long vm = vm_size_bytes();
	REQUIRE(vm > 0);
	struct rlimit old;
	REQUIRE(getrlimit(RLIMIT_AS, &old) == 0);
	/* Enough for a few small mappings, not for a 64 MiB region. */
	set_as_limit((rlim_t)vm + 8 * MIB);

	void *p;
	errno = 0;
	p = sheaf_malloc(100);
	CHECKF(p == NULL && errno == ENOMEM, "malloc(100) without room for a region = %p, errno %d",
	       p, errno);
	errno = 0;
	p = sheaf_calloc(10, 10);
	CHECKF(p == NULL && errno == ENOMEM, "calloc(10, 10) = %p, errno %d", p, errno);
	errno = 0;
	p = sheaf_malloc(16 * MIB);
	CHECKF(p == NULL && errno == ENOMEM, "malloc(16M) = %p, errno %d", p, errno);
	errno = 0;
	p = sheaf_realloc(NULL, 5000);
	CHECKF(p == NULL && errno == ENOMEM, "realloc(NULL, 5000) = %p, errno %d", p, errno);
	void *q = (void *)(uintptr_t)0x5eaf;
	int rc = sheaf_posix_memalign(&q, 64, 64);
	CHECKF(rc == ENOMEM && q == (void *)(uintptr_t)0x5eaf, "posix_memalign = %d", rc);
	struct sheaf_cache *c = sheaf_cache_create("tight", 128, 0, 0, NULL);
	if (c) {
		errno = 0;
		p = sheaf_cache_alloc(c);
		CHECKF(p == NULL && errno == ENOMEM, "sheaf_cache_alloc = %p, errno %d", p, errno);
		void *objs[4];
		CHECK(sheaf_cache_alloc_bulk(c, 4, objs) == 0 && errno == ENOMEM);
	}

	REQUIRE(setrlimit(RLIMIT_AS, &old) == 0);
	p = sheaf_malloc(100);
	CHECKF(p != NULL, "malloc(100) with the limit lifted: NULL, errno %d", errno);
	sheaf_free(p);
	p = sheaf_malloc(16 * MIB);
	CHECK(p != NULL);
	sheaf_free(p);
	if (c) {
		p = sheaf_cache_alloc(c);
		CHECK(p != NULL);
		sheaf_cache_free(c, p);
		CHECK(sheaf_cache_destroy(c) == 0);
	}
	return check_done("fault rlimit_tight");
}

/* --------------------------------------------- rcu without a drain thread */
struct small { uint64_t a; struct rcu_ptr rp; char pad[40]; };
struct big { char pad[100000]; struct rcu_head rh; };
struct cobj { char pad[24]; struct rcu_ptr rp; };

/* The objects are allocated before thread creation is cut off (`prepare`),
 * so that the rlimit variant does not need new mappings for them. */
enum { NSMALL = 1000, NBIG = 12, NCOBJ = 300 };
static struct small *smalls[NSMALL];
static struct big *bigs[NBIG];
static struct cobj *cobjs[NCOBJ], *nobjs[NCOBJ];
static struct sheaf_cache *cache_s, *cache_n;
static int64_t rcu_live0;

static void rcu_prepare(void)
{
	cache_s = sheaf_cache_create("nothread", sizeof(struct cobj), 0, 0, NULL);
	cache_n = sheaf_cache_create("nothread-nosheaf", sizeof(struct cobj), 0, SHEAF_NO_SHEAVES, NULL);
	REQUIRE(cache_s && cache_n);
	rcu_live0 = live();
	for (int i = 0; i < NSMALL; i++)
		REQUIRE((smalls[i] = sheaf_malloc(sizeof(struct small))) != NULL);
	for (int i = 0; i < NBIG; i++)
		REQUIRE((bigs[i] = sheaf_malloc(sizeof(struct big))) != NULL);
	for (int i = 0; i < NCOBJ; i++) {
		REQUIRE((cobjs[i] = sheaf_cache_alloc(cache_s)) != NULL);
		REQUIRE((nobjs[i] = sheaf_cache_alloc(cache_n)) != NULL);
	}
}

static void *noop_thread(void *arg)
{
	return arg;
}

/* `strict`: thread creation is impossible for sure (seccomp); otherwise a
 * drain thread that starts after all makes the case a SKIP. */
static int rcu_without_thread(const char *name, bool strict)
{
	pthread_t t;
	pthread_attr_t attr;
	REQUIRE(pthread_attr_init(&attr) == 0);
	REQUIRE(pthread_attr_setstacksize(&attr, 128 << 10) == 0);
	int err = pthread_create(&t, &attr, noop_thread, NULL);
	pthread_attr_destroy(&attr);
	if (err == 0) {
		pthread_join(t, NULL);
		SKIP("%s: pthread_create() still works here", name);
	}
	printf("  pthread_create() fails: %s\n", strerror(err));
	struct sheaf_stats s0 = stats();

	for (int i = 0; i < NSMALL; i++)
		rcu_free(smalls[i], rp);
	for (int i = 0; i < NBIG; i++)
		rcu_free(bigs[i], rh);
	for (int i = 0; i < NCOBJ; i++) {
		rcu_free(cobjs[i], rp);
		if (i % 2)
			rcu_free(nobjs[i], rp);
		else
			rcu_free_mightsleep(nobjs[i]);
	}
	unsigned long total = NSMALL + NBIG + 2 * NCOBJ;
	struct sheaf_stats s1 = stats();
	/* A tiny build's rcu_free_mightsleep() waits and frees (rcu.h). */
	unsigned long waited = sheaf_build_flags() & SHEAF_BUILD_TINY ? NCOBJ / 2 : 0;
	CHECKF(s1.rcu_objects_freed - s0.rcu_objects_freed == waited,
	       "%llu objects freed before any barrier, with no drain thread (want %lu)",
	       (unsigned long long)(s1.rcu_objects_freed - s0.rcu_objects_freed), waited);

	int rc = sheaf_cache_rcu_barrier(cache_s);
	CHECKF(rc == 0, "sheaf_cache_rcu_barrier() = %d, errno %d", rc, errno);
	struct sheaf_cache_stats cs;
	sheaf_cache_stats_get(cache_s, &cs);
	CHECKF(cs.objects_active == 0, "cache_rcu_barrier left %zu objects active", cs.objects_active);

	rc = rcu_free_barrier();
	CHECKF(rc == 0, "rcu_free_barrier() = %d, errno %d", rc, errno);
	struct sheaf_stats s2 = stats();
	printf("  %lu objects rcu_free()'d, %llu of them linked through their field (no memory "
	       "for a sheaf or an array), %llu freed by the barrier\n", total,
	       (unsigned long long)(s2.rcu_fallback - s0.rcu_fallback),
	       (unsigned long long)(s2.rcu_objects_freed - s0.rcu_objects_freed));
	CHECKF(s2.rcu_pending == 0, "rcu_pending %llu after the barrier",
	       (unsigned long long)s2.rcu_pending);
	CHECKF(s2.rcu_objects_freed - s0.rcu_objects_freed == total,
	       "rcu_objects_freed grew by %llu, want %lu",
	       (unsigned long long)(s2.rcu_objects_freed - s0.rcu_objects_freed), total);
	CHECKF(live() == rcu_live0, "allocs - frees %lld, want %lld", (long long)live(),
	       (long long)rcu_live0);
	if (!strict && threads_in_process() > 1)
		SKIP("%s: the drain thread could be started after all", name);
	CHECKF(threads_in_process() == 1, "%d threads: a drain thread was started after all",
	       threads_in_process());
	CHECK(sheaf_cache_destroy(cache_s) == 0);
	CHECK(sheaf_cache_destroy(cache_n) == 0);

	/* And again: rcu_free() keeps working, the barrier keeps freeing. */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < NSMALL; i++) {
			smalls[i] = sheaf_malloc(sizeof(struct small));
			REQUIRE(smalls[i] != NULL);
			rcu_free(smalls[i], rp);
		}
		CHECK(rcu_free_barrier() == 0);
	}
	CHECKF(live() == rcu_live0, "allocs - frees %lld, want %lld", (long long)live(),
	       (long long)rcu_live0);
	CHECK(stats().rcu_pending == 0);
	CHECK(threads_in_process() == 1);
	return check_done(name);
}

/* Makes clone() and clone3() fail with EAGAIN: no thread can be created. */
static bool forbid_threads(void)
{
#if defined(__x86_64__)
	const unsigned int arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
	const unsigned int arch = AUDIT_ARCH_AARCH64;
#else
	const unsigned int arch = 0;
	return false;
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EAGAIN & SECCOMP_RET_DATA)),
	};
	struct sock_fprog prog = { (unsigned short)(sizeof(f) / sizeof(f[0])), f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return false;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0;
}

static int case_rcu_nothread_seccomp(void)
{
	rcu_prepare();
	if (!forbid_threads())
		SKIP("no seccomp filter could be installed (%s)", strerror(errno));
	return rcu_without_thread("fault rcu_nothread_seccomp", true);
}

static int case_rcu_nothread_rlimit(void)
{
	if (UNDER_ASAN)
		SKIP("RLIMIT_AS cannot be used under AddressSanitizer (shadow memory)");
	rcu_prepare();
	/* A thread needs a stack mapped (sheaf's drain thread 256 KiB of its
	 * own, others RLIMIT_STACK's 8 MiB): leave 64 KiB of address space.
	 * sheaf itself cannot map anything new either: rcu_free() gets by
	 * with the metadata it already has, or links objects through their
	 * fields (the last resort; the count is printed). */
	long vm = vm_size_bytes();
	REQUIRE(vm > 0);
	set_as_limit((rlim_t)vm + (64 << 10));
	return rcu_without_thread("fault rcu_nothread_rlimit", false);
}

/* ------------------------------------------------------------- driver */
static const struct {
	const char *name;
	int (*fn)(void);
} cases[] = {
	{ "madvise", case_madvise },
	{ "inject_large", case_inject_large },
	{ "inject_small", case_inject_small },
	{ "inject_cache", case_inject_cache },
	{ "rlimit_as", case_rlimit_as },
	{ "rlimit_tight", case_rlimit_tight },
	{ "rcu_nothread_seccomp", case_rcu_nothread_seccomp },
	{ "rcu_nothread_rlimit", case_rcu_nothread_rlimit },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static int run_case(const char *self, const char *name)
{
	fflush(stdout);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		execl("/proc/self/exe", self, "--case", name, (char *)NULL);
		execl(self, self, "--case", name, (char *)NULL);
		_exit(126);
	}
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	printf("  %s: killed by signal %d%s\n", name, WTERMSIG(st),
	       WTERMSIG(st) == SIGALRM ? " (hung)" : "");
	return 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--case") == 0) {
		alarm(120);   /* a hang fails instead of blocking the suite */
		for (size_t i = 0; i < NCASES; i++)
			if (strcmp(argv[2], cases[i].name) == 0)
				return cases[i].fn();
		fprintf(stderr, "test_fault: no case %s\n", argv[2]);
		return 2;
	}
	int failed = 0, skipped = 0;
	for (size_t i = 0; i < NCASES; i++) {
		if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
			continue;
		printf("== %s\n", cases[i].name);
		int rc = run_case(argv[0], cases[i].name);
		printf("%s: %s\n", cases[i].name, rc == 0 ? "PASS" : rc == 77 ? "SKIP" : "FAIL");
		failed += rc != 0 && rc != 77;
		skipped += rc == 77;
	}
	printf("test_fault: %d failed, %d skipped\n", failed, skipped);
	return failed ? 1 : 0;
}
