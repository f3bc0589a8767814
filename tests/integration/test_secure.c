/*
 * test_secure.c - SHEAF_OPTIONS=secure: guard pages and random object order.
 *
 * The parent re-executes itself with SHEAF_OPTIONS=secure=1 (and once
 * without, as the control) and checks, from outside the allocator:
 *   - the page after the last object of a slab, and after every large
 *     block, cannot be read (write(2) from it fails with EFAULT), and a
 *     one-byte overflow there kills a child with SIGSEGV;
 *   - consecutive mallocs of one size are not handed out in address order
 *     (the control run: nearly all are);
 *   - large blocks keep their contents across realloc (they move by copy);
 *   - the randomized workload of the other tests still holds its data.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "sheaf.h"

#define PAGE 4096u

static int probe_fd[2];

/* Whether `addr` is readable, without touching it: the kernel copies from
 * it and reports EFAULT instead of a fault. */
static int readable(const void *addr)
{
	char c;
	ssize_t r = write(probe_fd[1], addr, 1);
	if (r == 1) {
		(void)!read(probe_fd[0], &c, 1);
		return 1;
	}
	return errno == EFAULT ? 0 : -1;
}

/* Small blocks: some of them end a slab, and the next page is the guard.
 * Returns how many of `n` blocks of `size` are followed by an unreadable
 * page at their end; *last gets one of them. */
static unsigned int guarded_ends(size_t size, unsigned int n, void **keep, char **last)
{
	unsigned int found = 0;
	for (unsigned int i = 0; i < n; i++) {
		char *p = malloc(size);
		REQUIRE(p);
		memset(p, 0x5a, size);
		keep[i] = p;
		size_t u = malloc_usable_size(p);
		if (((uintptr_t)(p + u) & (PAGE - 1)) == 0 && readable(p + u) == 0) {
			found++;
			*last = p;
		}
	}
	return found;
}

static int overflow_kills(char *p, size_t at)
{
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);   /* a sanitizer's handler would report and exit */
		p[at] = 1;   /* one byte past the block */
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
}

/* Fraction (percent) of consecutive mallocs of one size that are address
 * neighbours: an allocator handing out a slab in order makes nearly all. */
static unsigned int neighbour_percent(size_t size, unsigned int n)
{
	char **p = calloc(n, sizeof(*p));
	REQUIRE(p);
	unsigned int near = 0;
	for (unsigned int i = 0; i < n; i++) {
		p[i] = malloc(size);
		REQUIRE(p[i]);
		if (i && (p[i] == p[i - 1] + size || p[i] == p[i - 1] - size))
			near++;
	}
	for (unsigned int i = 0; i < n; i++)
		free(p[i]);
	free(p);
	return near * 100 / (n - 1);
}

static int child(int secure)
{
	REQUIRE(pipe(probe_fd) == 0);
	/* Enough blocks to fill several slabs (at most 128 KiB each), so
	 * that whole slabs, last objects included, are handed out whatever
	 * the order. */
	static void **keep[4];
	static unsigned int count[4];
	static const size_t sizes[4] = { 64, 1000, 4096, 24576 };
	for (int k = 0; k < 4; k++) {
		char *last = NULL;
		count[k] = sizes[k] * 400 >= 409600 ? 400 : (unsigned int)(409600 / sizes[k]);
		keep[k] = calloc(count[k], sizeof(void *));
		REQUIRE(keep[k]);
		unsigned int g = guarded_ends(sizes[k], count[k], keep[k], &last);
		printf("size %5zu: %3u of %u blocks end at a guard page\n", sizes[k], g, count[k]);
		if (secure) {
			CHECKF(g > 0, "size %zu: no block of %u ends at a guard page", sizes[k], count[k]);
			if (last)
				CHECKF(overflow_kills(last, malloc_usable_size(last)),
				       "size %zu: overflow past %p did not fault", sizes[k], (void *)last);
		} else {
			CHECKF(g == 0, "size %zu: %u guard pages without secure mode", sizes[k], g);
		}
	}
	for (int k = 0; k < 4; k++) {
		for (unsigned int i = 0; i < count[k]; i++) {
			const unsigned char *p = keep[k][i];
			CHECK(p[0] == 0x5a && p[sizes[k] - 1] == 0x5a);
			free(keep[k][i]);
		}
		free(keep[k]);
	}

	/* Large blocks: each ends in a guard (secure), contents survive realloc. */
	static const size_t lsizes[] = { 40000, 65536, 100001, 1u << 20, 3000000 };
	for (size_t i = 0; i < sizeof(lsizes) / sizeof(lsizes[0]); i++) {
		size_t n = lsizes[i];
		char *p = malloc(n);
		REQUIRE(p);
		memset(p, (int)i + 1, n);
		size_t u = malloc_usable_size(p);
		CHECK(u >= n);
		if (secure) {
			CHECKF(readable(p + u) == 0, "large %zu: page after the block is readable", n);
			CHECKF(overflow_kills(p, u), "large %zu: overflow did not fault", n);
		}
		char *q = realloc(p, 2 * n + 123);
		REQUIRE(q);
		for (size_t j = 0; j < n; j += 997)
			CHECK(q[j] == (char)(i + 1));
		q = realloc(q, n / 3);
		REQUIRE(q);
		CHECK(q[0] == (char)(i + 1) && q[n / 3 - 1] == (char)(i + 1));
		if (secure) {
			void *a = NULL;
			CHECK(posix_memalign(&a, 65536, n) == 0);
			CHECK(((uintptr_t)a & 65535) == 0);
			CHECKF(readable((char *)a + malloc_usable_size(a)) == 0, "aligned large %zu unguarded", n);
			free(a);
		}
		free(q);
	}

	/* memalign() takes a malloc class whose stride is a multiple of the
	 * alignment: the slab's leading slack must keep it (enough blocks to
	 * fill several slabs of each class). */
	static const size_t aligns[] = { 32, 64, 128, 256, 512, 1024, 2048, 4096 };
	static const size_t asizes[] = { 1, 100, 200, 448, 700, 896, 1500, 3000, 5000, 14000 };
	unsigned int misaligned = 0;
	for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++)
		for (size_t z = 0; z < sizeof(asizes) / sizeof(asizes[0]); z++) {
			void *blk[300];
			for (int i = 0; i < 300; i++) {
				blk[i] = aligned_alloc(aligns[a], asizes[z]);
				REQUIRE(blk[i]);
				misaligned += ((uintptr_t)blk[i] & (aligns[a] - 1)) != 0;
			}
			for (int i = 0; i < 300; i++)
				free(blk[i]);
		}
	CHECKF(misaligned == 0, "%u aligned_alloc() blocks misaligned", misaligned);

	unsigned int pct = neighbour_percent(48, 2000);
	printf("consecutive 48-byte mallocs that are address neighbours: %u%%\n", pct);
	if (secure)
		CHECKF(pct < 50, "secure: %u%% of consecutive blocks are neighbours", pct);
	else
		CHECKF(pct > 80, "control: only %u%% neighbours (the check would not see order)", pct);

	/* A churn of mixed sizes keeps its data. */
	static unsigned char *slot[4096];
	static size_t len[4096];
	uint64_t x = 88172645463325252ull;
	for (unsigned int it = 0; it < 400000; it++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned int i = (unsigned int)(x % 4096);
		if (slot[i]) {
			CHECK(slot[i][0] == (unsigned char)i && slot[i][len[i] - 1] == (unsigned char)i);
			free(slot[i]);
		}
		len[i] = 1 + (size_t)((x >> 20) % ((x >> 50) & 1 ? 40000 : 600));
		slot[i] = malloc(len[i]);
		REQUIRE(slot[i]);
		slot[i][0] = slot[i][len[i] - 1] = (unsigned char)i;
	}
	for (unsigned int i = 0; i < 4096; i++)
		free(slot[i]);
	return check_done(secure ? "test_secure (secure)" : "test_secure (control)");
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--child"))
		return child(atoi(argv[2]));
	for (int secure = 1; secure >= 0; secure--) {
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			setenv("SHEAF_OPTIONS", secure ? "secure=1" : "secure=0", 1);
			execl("/proc/self/exe", argv[0], "--child", secure ? "1" : "0", (char *)NULL);
			_exit(127);
		}
		int st;
		waitpid(pid, &st, 0);
		CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s run: status 0x%x",
		       secure ? "secure" : "control", st);
	}
	return check_done("test_secure");
}
