/*
 * sizeclass.c - the malloc size classes and their caches (kmalloc-N).
 *
 * 8 B, then 16..128 B in steps of 16 (the alignment quantum: malloc results
 * of 16 B or more are 16-byte aligned, as glibc's), then four classes per
 * power of two up to 32 KiB (160, 192, 224, 256, 320, ...).  Above 128 B a
 * request wastes at most a quarter of what it asked for (129 B -> 160 B is
 * the worst case: 31/129 = 24%); below, the 16-byte quantum bounds the waste
 * to 15 bytes.  Every power of two up to 32 KiB is a class, which is what
 * lets memalign find an aligned class quickly.
 */
#include "internal.h"

const uint32_t class_size[NR_CLASSES] = {
	8, 16, 32, 48, 64, 80, 96, 112, 128,
	160, 192, 224, 256, 320, 384, 448, 512,
	640, 768, 896, 1024, 1280, 1536, 1792, 2048,
	2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192,
	10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
};

/* size_to_class() for size <= 1024, indexed by (size + 7) >> 3. */
const uint8_t class_small_index[(1024 >> 3) + 1] = {
#define C8(i) [i] = 0
	C8(0), C8(1),
#undef C8
#define R(lo, hi, c) [lo ... hi] = c
	/* (size+7)>>3 ranges: size 9..16 -> 2, 17..32 -> 3..4, ... */
	R(2, 2, 1), R(3, 4, 2), R(5, 6, 3), R(7, 8, 4), R(9, 10, 5), R(11, 12, 6),
	R(13, 14, 7), R(15, 16, 8), R(17, 20, 9), R(21, 24, 10), R(25, 28, 11),
	R(29, 32, 12), R(33, 40, 13), R(41, 48, 14), R(49, 56, 15), R(57, 64, 16),
	R(65, 80, 17), R(81, 96, 18), R(97, 112, 19), R(113, 128, 20),
#undef R
};

struct sheaf_cache kmalloc_caches[NR_CLASSES];
/* Their nodes, sheaf_nr_nodes per class, packed from the start: the pages
 * past the ones in use stay untouched zero pages.  Indexed [class][node]
 * with room for SHEAF_MAX_NODES each, every class's node 0 would sit on a
 * page of its own, and setting up the classes touched 41 pages (164 KiB of
 * every process's RSS) where 4 hold two nodes of each. */
static struct cache_node kmalloc_nodes[NR_CLASSES * SHEAF_MAX_NODES];

/* memalign(): the first class at or above `cls` whose size is a multiple of
 * 1 << a, indexed [cls][a] for alignments up to the page (slabs are
 * page-aligned, so such a class's objects are aligned).  A table, because
 * the search would divide by the alignment for every call. */
uint8_t class_aligned[NR_CLASSES][PAGE_SHIFT + 1];

void sizeclass_init(void)
{
	if (class_size[CLASS_PAGE] != PAGE_SIZE)
		diag_fatal("sheaf: CLASS_PAGE is not the page-sized class\n");
	for (unsigned int c = 0; c < NR_CLASSES; c++)
		for (unsigned int a = 0; a <= PAGE_SHIFT; a++) {
			unsigned int k = c;
			while (class_size[k] & ((1u << a) - 1))
				k++;   /* ends: 32 KiB is a multiple of them all */
			class_aligned[c][a] = (uint8_t)k;
		}
	for (int i = 0; i < NR_CLASSES; i++) {
		char name[32];
		diag_snprintf(name, sizeof(name), "kmalloc-%u", class_size[i]);
		/* Natural alignment: 16 for every class but the 8-byte one,
		 * and the page for the power-of-two classes is implied by
		 * page-aligned slabs. */
		if (cache_setup(&kmalloc_caches[i], &kmalloc_nodes[(size_t)i * sheaf_nr_nodes], name, class_size[i],
				class_size[i] >= 16 ? 16 : 8, 0, NULL, i) != 0)
			diag_fatal("sheaf: cannot set up size class %u\n", class_size[i]);
	}
}
