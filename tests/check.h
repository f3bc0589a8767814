/*
 * check.h - the few macros every sheaf test program uses.
 *
 * A test program is one automake test: exit 0 = pass, 77 = skip, anything
 * else = fail.  CHECK() reports the first failed expectation with its
 * location and keeps counting, so one run shows every broken assertion;
 * check_done() turns the count into the exit status.
 */
#ifndef SHEAF_TESTS_CHECK_H
#define SHEAF_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                    \
	do {                                                                           \
		check_count++;                                                         \
		if (!(cond)) {                                                         \
			check_failures++;                                              \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                      \
	} while (0)

#define CHECKF(cond, ...)                                                              \
	do {                                                                           \
		check_count++;                                                         \
		if (!(cond)) {                                                         \
			check_failures++;                                              \
			fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                  \
			fputc('\n', stderr);                                           \
		}                                                                      \
	} while (0)

/* Fatal: the rest of the test cannot run. */
#define REQUIRE(cond)                                                                  \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

#define SKIP(...)                                                                      \
	do {                                                                           \
		printf("SKIP: " __VA_ARGS__);                                          \
		putchar('\n');                                                         \
		exit(77);                                                              \
	} while (0)

static inline int check_done(const char *name)
{
	printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
	return check_failures ? 1 : 0;
}

#endif
