/*
 * sheaf_names.h - the malloc family under sheaf's own names, for tests that
 * run under a sanitizer (tests/sanitize/run.sh compiles them with
 * -include tests/sanitize/sheaf_names.h).
 *
 * ASan, UBSan's runtime and TSan want their runtime first and intercept
 * malloc themselves, so under a sanitizer sheaf cannot be the interposed
 * malloc (DESIGN.md, "Known traps").  Instead the test program is linked
 * with the core (lib/, compiled with the same sanitizer) and every call the
 * test makes to the malloc family is renamed here to the sheaf_* function
 * that does the same: the test exercises sheaf exactly as before, while
 * libc and the sanitizer keep their own malloc for themselves.  Memory that
 * libc allocates for the test (fopen, tmpfile, pthread) stays libc's and is
 * never handed to these names by the tests.
 *
 * The system headers are included first, so their declarations keep the
 * real names; only the test's own code sees the macros.  Names with no
 * sheaf_* counterpart in the core (mallopt, mallinfo, mallinfo2,
 * malloc_stats, malloc_info: glibc extras implemented in preload/preload.c)
 * are not renamed: tests/sanitize/run.sh leaves out the tests of those.
 */
#ifndef SHEAF_SANITIZE_NAMES_H
#define SHEAF_SANITIZE_NAMES_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "sheaf.h"

#define malloc             sheaf_malloc
#define free               sheaf_free
#define calloc             sheaf_calloc
#define realloc            sheaf_realloc
#define reallocarray       sheaf_reallocarray
#define posix_memalign     sheaf_posix_memalign
#define aligned_alloc      sheaf_aligned_alloc
#define memalign           sheaf_memalign
#define valloc             sheaf_valloc
#define pvalloc            sheaf_pvalloc
#define malloc_usable_size sheaf_malloc_usable_size
#define malloc_trim        sheaf_malloc_trim
/* The other names glibc programs call, each the same function in sheaf
 * (preload.c defines them as these). */
#define free_sized         sheaf_free_sized
#define free_aligned_sized sheaf_free_aligned_sized
#define cfree              sheaf_free
#define __libc_malloc      sheaf_malloc
#define __libc_free        sheaf_free
#define __libc_calloc      sheaf_calloc
#define __libc_realloc     sheaf_realloc
#define __libc_memalign    sheaf_memalign
#define __libc_valloc      sheaf_valloc
#define __libc_pvalloc     sheaf_pvalloc
#define __posix_memalign   sheaf_posix_memalign

/*
 * For test_api.c, whose test_symbols() checks with dlsym() that each name
 * resolves into libsheaf.so - meaningless here, where the names are macros.
 * run.sh calls this instead: every name renamed above counts as callable
 * (so the rest of test_api runs through the sheaf_* functions), the glibc
 * extras that only preload.c implements do not (their checks are skipped by
 * the test itself, through callable()).
 */
static inline void sheaf_sanitize_mark_callable(const char *const *names, bool *ok, size_t n)
{
	static const char *const renamed[] = {
		"malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
		"aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size",
		"malloc_trim", "free_sized", "free_aligned_sized", "cfree", "__libc_malloc",
		"__libc_free", "__libc_calloc", "__libc_realloc", "__libc_memalign",
		"__libc_valloc", "__libc_pvalloc", "__posix_memalign",
	};
	for (size_t i = 0; i < n; i++) {
		ok[i] = strncmp(names[i], "sheaf_", 6) == 0;
		for (size_t j = 0; j < sizeof(renamed) / sizeof(renamed[0]); j++)
			if (strcmp(names[i], renamed[j]) == 0)
				ok[i] = true;
	}
}

#endif
