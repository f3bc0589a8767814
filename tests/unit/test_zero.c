/*
 * test_zero.c - zero_block(), which clears what calloc() hands out.
 *
 * What it proves, both with memset() and with the AVX2 stores (when the
 * CPU has AVX2, whatever its vendor):
 *   - exactly n bytes are cleared, for every n from 0 to 1100 and for n
 *     around the bounds of the vector path (512 B, 512 KiB) and a few odd
 *     sizes in between, at offsets 0..47 from a 64-byte boundary (calloc()
 *     blocks are 16-byte aligned, the stores must not assume more): the
 *     byte before and the 64 bytes after stay as they were;
 *   - calloc() through sheaf_calloc() returns zeroed blocks of those sizes
 *     after the same blocks were dirtied and freed (small classes, a page
 *     class, the thread's large block).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "../check.h"

#define GUARD 0xa5
#define MAXN (600u << 10)

static unsigned char *buf;

static bool zeroed_exactly(size_t off, size_t n)
{
	memset(buf, GUARD, off + n + 64);
	zero_block(buf + off, n);
	if (off && buf[off - 1] != GUARD)
		return false;
	for (size_t i = 0; i < n; i++)
		if (buf[off + i])
			return false;
	for (size_t i = 0; i < 64; i++)
		if (buf[off + n + i] != GUARD)
			return false;
	return true;
}

static void sizes(const char *how)
{
	static const size_t odd[] = { 511, 512, 513, 640, 1000, 4095, 4096, 4097, 12345, 65536,
				      65535 + 17, 131072 + 48, 524287, 524288, 524289, 600000 };
	unsigned int bad = 0;
	for (size_t n = 0; n <= 1100; n++)
		bad += !zeroed_exactly(n % 48, n);
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		for (size_t off = 0; off < 48; off += 16)
			bad += !zeroed_exactly(off + (i & 1), odd[i]);
	CHECKF(bad == 0, "%s: %u sizes/offsets not zeroed exactly", how, bad);
}

static void calloc_after_dirt(const char *how)
{
	static const size_t n[] = { 100, 600, 2000, 4096, 20000, 40000, 65536, 300000 };
	unsigned int bad = 0;
	for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++)
		for (int round = 0; round < 3; round++) {
			unsigned char *p = sheaf_malloc(n[i]);
			REQUIRE(p);
			memset(p, 0xee, n[i]);
			sheaf_free(p);
			unsigned char *q = sheaf_calloc(1, n[i]);
			REQUIRE(q);
			for (size_t k = 0; k < n[i]; k++)
				bad += q[k] != 0;
			sheaf_free(q);
		}
	CHECKF(bad == 0, "%s: %u bytes of calloc()'d blocks not zero", how, bad);
}

int main(void)
{
	sheaf_init();
	buf = aligned_alloc(64, MAXN + 128);
	REQUIRE(buf);
	bool chosen = zero_vec;
	printf("test_zero: sheaf_init() chose %s\n", chosen ? "AVX2 stores" : "memset()");
	zero_vec = false;
	sizes("memset");
	calloc_after_dirt("memset");
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2")) {
		zero_vec = true;
		sizes("AVX2");
		calloc_after_dirt("AVX2");
	} else {
		printf("test_zero: no AVX2 here, the vector path is not run\n");
	}
	zero_vec = chosen;
	free(buf);
	return check_done("test_zero");
}
