/*
 * pattern.h - content patterns for tests that verify what blocks hold.
 *
 * Byte i of a block holds byte (i % 8) of pat_word(seed, i / 8); callers
 * derive the seed from something unique to the allocation (a tag or id,
 * and the size), so that a block overwritten by another, or a stale copy,
 * does not match.  Used by tests linked with sheaf and by programs that
 * are not (tests/stress): header only, nothing but libc.
 */
#ifndef SHEAF_TESTS_PATTERN_H
#define SHEAF_TESTS_PATTERN_H

#include <stdint.h>
#include <string.h>

/* xorshift64*: the tests' random numbers (reproducible from a seed). */
static inline uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static inline uint64_t pat_word(uint64_t seed, size_t k)
{
	return seed + k * 0x9e3779b97f4a7c15ull;
}

static inline uint8_t pat_byte(uint64_t seed, size_t i)
{
	return (uint8_t)(pat_word(seed, i / 8) >> (8 * (i % 8)));
}

static inline void fill_range(uint8_t *p, uint64_t seed, size_t from, size_t to)
{
	size_t i = from;
	for (; i < to && (i & 7); i++)
		p[i] = pat_byte(seed, i);
	for (; i + 8 <= to; i += 8) {
		uint64_t w = pat_word(seed, i / 8);
		memcpy(p + i, &w, 8);
	}
	for (; i < to; i++)
		p[i] = pat_byte(seed, i);
}

/* Index of the first wrong byte in [from, to), or SIZE_MAX. */
static inline size_t check_range(const uint8_t *p, uint64_t seed, size_t from, size_t to)
{
	size_t i = from;
	for (; i < to && (i & 7); i++)
		if (p[i] != pat_byte(seed, i))
			return i;
	for (; i + 8 <= to; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w != pat_word(seed, i / 8))
			for (size_t j = i;; j++)
				if (p[j] != pat_byte(seed, j))
					return j;
	}
	for (; i < to; i++)
		if (p[i] != pat_byte(seed, i))
			return i;
	return SIZE_MAX;
}

#endif
