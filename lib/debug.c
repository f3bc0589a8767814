/*
 * debug.c - SHEAF_DEBUG, in the spirit of the kernel's slub_debug.
 *
 *   SHEAF_DEBUG=FZPU                 every cache
 *   SHEAF_DEBUG=FZ,kmalloc-64,conn   only the caches named after the flags
 *
 *   F  sanity checks on every free: exact double-free detection (the slab
 *      bitmap), interior/foreign pointers, slab counters against the bitmap
 *   Z  red zones of DEBUG_RZ bytes before and after each object, filled with
 *      0xbb, checked on free and by sheaf_debug_check()
 *   P  poisoning: free objects are filled with 0x6b (last byte 0xa5), which
 *      is checked when the object is allocated again (write after free)
 *   U  the allocation and free call sites of each object, recorded with
 *      libunwind and printed in every report about it
 *
 * A debugged cache runs without sheaves, so every allocation and free goes
 * through these checks.  Its objects sit at slot + DEBUG_RZ inside a larger
 * stride; the free fast path never sees them (slab->cls is CLASS_NONE).
 * Reports are one block per problem - what, where (address, cache, offset),
 * the recorded call sites - then abort() unless abort_on_error=0, in which
 * case the damage is repaired (red zone or poison restored) and the program
 * goes on.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#endif

#define RZ_BYTE     0xbb
#define POISON_FREE 0x6b
#define POISON_END  0xa5

unsigned int sheaf_debug_flags;      /* for every cache, or for the named */
static const char *debug_names;      /* ",name,name" tail of SHEAF_DEBUG  */

struct track {
	void *addrs[DEBUG_TRACK_DEPTH];
	int depth;
	pid_t tid;
	uint32_t size;   /* alloc track: the size asked for (Z checks the rest) */
};

void debug_init(void)
{
	const char *s = getenv("SHEAF_DEBUG");
	if (!s || !*s)
		return;
	unsigned int f = 0;
	const char *p = s;
	for (; *p && *p != ','; p++) {
		switch (*p) {
		case 'F': case 'f': f |= DEBUG_F; break;
		case 'Z': case 'z': f |= DEBUG_Z; break;
		case 'P': case 'p': f |= DEBUG_P; break;
		case 'U': case 'u': f |= DEBUG_U; break;
		case '-': break;   /* "-" alone: nothing */
		default:
			diag_printf("sheaf: SHEAF_DEBUG: unknown flag '%c' ignored (flags: F Z P U)\n", *p);
		}
	}
	if (p == s)
		f = DEBUG_F | DEBUG_Z | DEBUG_P | DEBUG_U;   /* SHEAF_DEBUG=,name: all flags */
	sheaf_debug_flags = f;
	debug_names = *p == ',' ? p : NULL;
}

/* The flags for a cache called `name`. */
unsigned int debug_flags_for(const char *name)
{
	if (!sheaf_debug_flags || !debug_names)
		return sheaf_debug_flags;
	size_t n = strlen(name);
	for (const char *p = debug_names; *p == ','; ) {
		const char *q = p + 1;
		size_t len = strcspn(q, ",");
		if (len == n && memcmp(q, name, n) == 0)
			return sheaf_debug_flags;
		p = q + len;
	}
	return 0;
}

/* ---------------------------------------------------------- tracking */
static struct track *track_of(const struct slab *s, uint32_t idx, bool freed)
{
	return s->tracks ? &s->tracks[(size_t)idx * 2 + (freed ? 1 : 0)] : NULL;
}

static void track_record(struct track *t)
{
	if (!t)
		return;
	t->tid = (pid_t)gettid();
	t->depth = 0;
#ifdef HAVE_LIBUNWIND
	if (!sheaf_under_valgrind)
		t->depth = unw_backtrace(t->addrs, DEBUG_TRACK_DEPTH);
#endif
}

static void track_print(const char *what, const struct track *t, bool wanted)
{
	if (!wanted)
		return;
	if (!t || !t->tid) {
		diag_printf("  %s: not recorded\n", what);
		return;
	}
	diag_printf("  %s by thread %d:\n", what, (int)t->tid);
	diag_frames("    ", t->addrs, t->depth, DEBUG_TRACK_DEPTH);
}

size_t debug_track_bytes(uint32_t objects)
{
	return (size_t)objects * 2 * sizeof(struct track);
}

/* ----------------------------------------------------------- checks */
static void report_begin(const struct sheaf_cache *c, const char *what, const void *obj)
{
	diag_printf("sheaf: BUG %s: %s (object %p, %u bytes)\n", c->name, what, obj, c->object_size);
}

static void report_end(const struct slab *s, const void *obj)
{
	uint32_t idx = slab_index(s, (uintptr_t)obj);
	bool u = s->cache->debug & DEBUG_U;
	track_print("allocated", track_of(s, idx, false), u);
	track_print("freed", track_of(s, idx, true), u);
	diag_printf("  found at:\n");
	diag_backtrace();
	if (sheaf_opt.abort_on_error)
		abort();
}

/* Returns the first byte in [p, p+n) that is not `v`, or NULL. */
static const uint8_t *find_not(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return p + i;
	return NULL;
}

/* Checks that [zone, zone+len) still holds the red zone pattern; reports
 * and repairs it if not.  `what` starts the report ("... at offset N"). */
static int check_zone(const struct sheaf_cache *c, const struct slab *s, uint8_t *obj,
		      uint8_t *zone, size_t len, const char *what)
{
	const uint8_t *b = find_not(zone, len, RZ_BYTE);
	if (!b)
		return 0;
	char msg[128];
	diag_snprintf(msg, sizeof(msg), "%s at offset %ld (0x%x)", what, (long)(b - obj), *b);
	report_begin(c, msg, obj);
	memset(zone, RZ_BYTE, len);
	report_end(s, obj);
	return 1;
}

static int check_redzones(const struct sheaf_cache *c, const struct slab *s, uint8_t *obj)
{
	int bad = 0;
	uint32_t idx = slab_index(s, (uintptr_t)obj);
	/* The bytes between the size asked for and the object's end are a
	 * red zone too (kmalloc's orig_size). */
	const struct track *t = track_of(s, idx, false);
	if (t && t->size && t->size < c->object_size && !slab_obj_is_free(s, idx)) {
		char what[64];
		diag_snprintf(what, sizeof(what), "write past the %u bytes asked for,", t->size);
		bad += check_zone(c, s, obj, obj + t->size, c->object_size - t->size, what);
	}
	/* The zones are obj_offset bytes before (alignment may make that more
	 * than DEBUG_RZ) and the rest of the stride after. */
	bad += check_zone(c, s, obj, obj - c->obj_offset, c->obj_offset,
			  "red zone before the object overwritten");
	bad += check_zone(c, s, obj, obj + c->object_size, c->size - c->obj_offset - c->object_size,
			  "red zone after the object overwritten");
	return bad;
}

static void poison(const struct sheaf_cache *c, uint8_t *obj)
{
	memset(obj, POISON_FREE, c->object_size - 1);
	obj[c->object_size - 1] = POISON_END;
}

static int check_poison(const struct sheaf_cache *c, const struct slab *s, uint8_t *obj)
{
	const uint8_t *b = find_not(obj, c->object_size - 1, POISON_FREE);
	if (!b && obj[c->object_size - 1] == POISON_END)
		return 0;
	if (!b)
		b = obj + c->object_size - 1;
	char what[112];
	diag_snprintf(what, sizeof(what), "object written after it was freed, at offset %lu (0x%x)",
		      (unsigned long)(b - obj), *b);
	report_begin(c, what, obj);
	poison(c, obj);
	report_end(s, obj);
	return 1;
}

/* ------------------------------------------------------------ hooks */
void debug_slab_init(struct sheaf_cache *c, struct slab *s)
{
	for (uint32_t i = 0; i < s->objects; i++) {
		uint8_t *slot = (uint8_t *)(s->base + (uintptr_t)i * s->size);
		if (c->debug & DEBUG_Z)
			memset(slot, RZ_BYTE, c->size);
		if (c->debug & DEBUG_P)
			poison(c, slot + c->obj_offset);
	}
}

void *debug_on_alloc(struct sheaf_cache *c, void *slot)
{
	uint8_t *obj = (uint8_t *)slot + c->obj_offset;
	struct slab *s = (struct slab *)pagemap_lookup((uintptr_t)obj);
	sheaf_assert(s);   /* just taken from one of c's slabs */
	uint32_t idx = slab_index(s, (uintptr_t)obj);
	struct track *a = track_of(s, idx, false);
	if (a)
		a->size = c->object_size;   /* debug_set_size() narrows it */
	if (c->debug & DEBUG_P)
		check_poison(c, s, obj);
	if (c->debug & DEBUG_Z)
		check_redzones(c, s, obj);   /* damage done while it was free */
	if (a) {
		if (c->debug & DEBUG_U) {
			track_record(a);
			track_of(s, idx, true)->tid = 0;
		}
	}
	return obj;
}

/* malloc(size) got `obj` from a debugged class: remember the size and
 * make the slack after it a red zone. */
void debug_set_size(struct sheaf_cache *c, void *obj, size_t size)
{
	if (!(c->debug & DEBUG_Z) || size >= c->object_size)
		return;
	struct slab *s = (struct slab *)pagemap_lookup((uintptr_t)obj);
	sheaf_assert(s);   /* malloc() just took it from one of c's slabs */
	struct track *t = track_of(s, slab_index(s, (uintptr_t)obj), false);
	if (!t)
		return;
	t->size = (uint32_t)size;
	memset((uint8_t *)obj + size, RZ_BYTE, c->object_size - size);
}

/* F: the slab's count must agree with its bitmap.  Called with its node's
 * lock held: other threads change both under it. */
void debug_slab_consistent(struct sheaf_cache *c, struct slab *s)
{
	uint32_t free_bits = 0;
	for (uint32_t w = 0; w < (s->objects + 63) / 64; w++)
		free_bits += (uint32_t)__builtin_popcountll(s->freemap[w]);
	if (free_bits + s->inuse != s->objects)
		diag_printf("sheaf: BUG %s: slab %p counts %u objects in use, its bitmap %u\n",
			    c->name, (void *)s->base, s->inuse, s->objects - free_bits);
}

void debug_on_free(struct sheaf_cache *c, struct slab *s, void *p)
{
	uint8_t *obj = p;
	if (c->debug & DEBUG_Z)
		check_redzones(c, s, obj);
	if (c->debug & DEBUG_U)
		track_record(track_of(s, slab_index(s, (uintptr_t)obj), true));
	if (c->debug & DEBUG_P)
		poison(c, obj);
}

/* The double free that the bitmap found, with the call sites. */
void debug_report_double_free(struct sheaf_cache *c, struct slab *s, void *obj)
{
	report_begin(c, "double free", obj);
	report_end(s, obj);
}

struct check_arg {
	int problems;
};

static void check_cache(struct sheaf_cache *c, void *arg)
{
	struct check_arg *a = arg;
	if (!c->debug)
		return;
	for (unsigned int k = 0; k < sheaf_nr_nodes; k++) {
		struct cache_node *n = &c->node[k];
		lock_acquire(&n->lock);
		struct slab *lists[3] = { n->full, n->partial, n->empty };
		for (int l = 0; l < 3; l++)
			for (struct slab *s = lists[l]; s; s = s->next)
				for (uint32_t i = 0; i < s->objects; i++) {
					uint8_t *obj = (uint8_t *)(s->base + (uintptr_t)i * s->size) +
						       c->obj_offset;
					if (c->debug & DEBUG_Z)
						a->problems += check_redzones(c, s, obj);
					if ((c->debug & DEBUG_P) && slab_obj_is_free(s, i))
						a->problems += check_poison(c, s, obj);
				}
		lock_release(&n->lock);
	}
}

int sheaf_debug_check(void)
{
	if (!sheaf_ready)
		return 0;
	struct check_arg a = { 0 };
	caches_foreach(check_cache, &a);
	return a.problems;
}
