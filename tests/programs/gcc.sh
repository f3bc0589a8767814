#!/bin/sh
# gcc.sh - build a small multi-file C program with gcc running on sheaf.
#
# What it proves: the whole GCC tool chain - the gcc driver and the cc1,
# as, collect2/ld (and lto1/lto-wrapper for the LTO build) it spawns, all
# inheriting LD_PRELOAD - runs on sheaf and produces byte-identical object
# files and executables to the same build on glibc's malloc.  A compiler
# is a good malloc client: large numbers of small tree/RTL nodes, obstacks
# growing through realloc, hash tables, and short processes that exit with
# most of their heap still live.  Bit-identical output is the strongest
# "nothing was corrupted" check there is.
#
# How: four source files and a header are written to a temporary
# directory, built (separate compiles + link, a one-command build, an LTO
# build) once on glibc, saved, and built again in the same directory on
# sheaf; objects and binaries are compared with cmp, the programs are run
# and their output compared, and the stderr of the sheaf build must show
# sheaf totals from the compiler processes.

. "$(dirname "$0")/lib.sh"
sheaf_init gcc

CC=${CC_FOR_SHEAF_TEST:-gcc}
command -v "$CC" >/dev/null 2>&1 || skip "$CC not found"
sheaf_log "compiler: $(command -v "$CC") ($("$CC" -dumpfullversion 2>/dev/null || "$CC" -dumpversion))"

SRC=$T/src
mkdir -p "$SRC"

# ---------------------------------------------------------------- sources --
cat >"$SRC/wordfreq.h" <<'EOF'
#ifndef WORDFREQ_H
#define WORDFREQ_H
#include <stddef.h>
#include <stdint.h>

struct entry {
	char *word;
	unsigned long count;
	struct entry *next;
};

struct table {
	struct entry **buckets;
	size_t nbuckets, nentries;
};

/* table.c */
void table_init(struct table *t, size_t nbuckets);
void table_add(struct table *t, const char *word, unsigned long n);
struct entry **table_sorted(const struct table *t);
void table_free(struct table *t);

/* text.c */
uint64_t text_rand(uint64_t *state);
char *text_make(uint64_t seed, size_t nwords);
size_t text_split(char *text, char ***words);

/* report.c */
char *report_build(struct entry **sorted, size_t n, size_t top);
#endif
EOF

cat >"$SRC/table.c" <<'EOF'
#include "wordfreq.h"
#include <stdlib.h>
#include <string.h>

static size_t hash(const char *s)
{
	size_t h = 1469598103934665603u;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211u;
	return h;
}

void table_init(struct table *t, size_t nbuckets)
{
	t->buckets = calloc(nbuckets, sizeof(*t->buckets));
	t->nbuckets = nbuckets;
	t->nentries = 0;
}

static void table_grow(struct table *t)
{
	size_t nb = t->nbuckets * 2;
	struct entry **b = calloc(nb, sizeof(*b));
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct entry *e = t->buckets[i], *next;
		for (; e; e = next) {
			next = e->next;
			size_t h = hash(e->word) % nb;
			e->next = b[h];
			b[h] = e;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = nb;
}

void table_add(struct table *t, const char *word, unsigned long n)
{
	size_t h = hash(word) % t->nbuckets;
	for (struct entry *e = t->buckets[h]; e; e = e->next)
		if (strcmp(e->word, word) == 0) {
			e->count += n;
			return;
		}
	struct entry *e = malloc(sizeof(*e));
	e->word = strdup(word);
	e->count = n;
	e->next = t->buckets[h];
	t->buckets[h] = e;
	if (++t->nentries > 2 * t->nbuckets)
		table_grow(t);
}

static int cmp_entry(const void *a, const void *b)
{
	const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->word, y->word);
}

struct entry **table_sorted(const struct table *t)
{
	struct entry **v = malloc((t->nentries + 1) * sizeof(*v));
	size_t n = 0;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct entry *e = t->buckets[i]; e; e = e->next)
			v[n++] = e;
	qsort(v, n, sizeof(*v), cmp_entry);
	v[n] = NULL;
	return v;
}

void table_free(struct table *t)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct entry *e = t->buckets[i], *next;
		for (; e; e = next) {
			next = e->next;
			free(e->word);
			free(e);
		}
	}
	free(t->buckets);
}
EOF

cat >"$SRC/text.c" <<'EOF'
#include "wordfreq.h"
#include <stdlib.h>
#include <string.h>

static const char *const syll[] = { "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "xe", "zu" };

uint64_t text_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

char *text_make(uint64_t seed, size_t nwords)
{
	size_t cap = 16, len = 0;
	char *buf = malloc(cap);
	for (size_t i = 0; i < nwords; i++) {
		/* Zipf-ish: short words are much more frequent. */
		unsigned n = 1 + (unsigned)(text_rand(&seed) % 3) * (unsigned)(text_rand(&seed) % 2);
		char w[16] = "";
		for (unsigned k = 0; k < n; k++)
			strcat(w, syll[text_rand(&seed) % 10]);
		size_t wl = strlen(w);
		while (len + wl + 2 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		memcpy(buf + len, w, wl);
		len += wl;
		buf[len++] = (i % 17 == 16) ? '\n' : ' ';
	}
	buf[len] = '\0';
	return buf;
}

size_t text_split(char *text, char ***words)
{
	size_t n = 0, cap = 4;
	char **v = malloc(cap * sizeof(*v));
	for (char *tok = strtok(text, " \n"); tok; tok = strtok(NULL, " \n")) {
		if (n == cap) {
			cap = cap * 3 / 2 + 1;
			v = realloc(v, cap * sizeof(*v));
		}
		v[n++] = tok;
	}
	*words = v;
	return n;
}
EOF

cat >"$SRC/report.c" <<'EOF'
#include "wordfreq.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *report_build(struct entry **sorted, size_t n, size_t top)
{
	size_t cap = 64, len = 0;
	char *out = malloc(cap);
	out[0] = '\0';
	for (size_t i = 0; i < n && i < top; i++) {
		char line[128];
		int l = snprintf(line, sizeof(line), "%4zu %-12s %lu\n", i + 1, sorted[i]->word,
				 sorted[i]->count);
		if (len + (size_t)l + 1 > cap) {
			cap = (len + (size_t)l + 1) * 2;
			out = realloc(out, cap);
		}
		memcpy(out + len, line, (size_t)l + 1);
		len += (size_t)l;
	}
	return out;
}
EOF

cat >"$SRC/main.c" <<'EOF'
#include "wordfreq.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	size_t nwords = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
	unsigned long total = 0;
	struct table t;
	table_init(&t, 8);
	for (uint64_t round = 1; round <= 4; round++) {
		char *text = text_make(0x9e3779b97f4a7c15u * round, nwords / 4);
		char **words;
		size_t n = text_split(text, &words);
		for (size_t i = 0; i < n; i++)
			table_add(&t, words[i], 1);
		total += n;
		free(words);
		free(text);
	}
	struct entry **sorted = table_sorted(&t);
	char *rep = report_build(sorted, t.nentries, 25);
	printf("words=%lu distinct=%zu buckets=%zu\n%s", total, t.nentries, t.nbuckets, rep);
	free(rep);
	free(sorted);
	table_free(&t);
	return 0;
}
EOF

# A larger generated unit so that cc1's optimiser has real work: many
# functions, switch tables, inlining candidates.
{
	echo '#include "wordfreq.h"'
	echo 'static unsigned long fwd(unsigned long x) { return x * 2654435761u; }'
	i=0
	while [ $i -lt 300 ]; do
		echo "static unsigned long f$i(unsigned long x) { switch (x % 7) { case 0: return x * $i + 1; case 1: return (x >> 3) ^ $i; case 2: return x + fwd(x / 2); default: return x - $i; } }"
		i=$((i + 1))
	done
	echo 'unsigned long gen_mix(unsigned long x) { unsigned long s = 0;'
	i=0
	while [ $i -lt 300 ]; do
		echo "	s += f$i(x + $i);"
		i=$((i + 1))
	done
	echo '	return s; }'
} >"$SRC/gen.c"
# main2 links gen.c too (a second program, so the link has more input).
sed 's/^int main(int argc, char \*\*argv)$/unsigned long gen_mix(unsigned long);\nint main(int argc, char **argv)/' \
	"$SRC/main.c" | sed 's/^\tprintf("words=/\tprintf("mix=%lu ", gen_mix(total));\n\tprintf("words=/' >"$SRC/main2.c"

# ------------------------------------------------------------------ build --
# Same directory, same flags for both allocators, so file names, debug info
# and build ids can only differ if the compiler's output does.
# -frandom-seed: GCC otherwise seeds some symbol names from the time/pid.
CFLAGS="-O2 -g -Wall -Wextra -std=gnu11 -frandom-seed=sheaf"
cat >"$T/build.sh" <<EOF
set -e
cd "$SRC"
rm -rf out && mkdir out
for f in table text report main gen main2; do
	$CC $CFLAGS -c \$f.c -o out/\$f.o
done
$CC -O2 -g -o out/wordfreq out/main.o out/table.o out/text.o out/report.o
$CC -O2 -g -o out/wordfreq2 out/main2.o out/gen.o out/table.o out/text.o out/report.o
# One command: the driver runs cc1 and as per file, then collect2/ld.
$CC $CFLAGS -o out/onestep main.c table.c text.c report.c
# Link-time optimisation: lto-wrapper, lto1, the linker plugin.
$CC $CFLAGS -flto -flto-partition=none -o out/lto main2.c gen.c table.c text.c report.c
$CC $CFLAGS -S -o out/gen.s gen.c
EOF

build()
{
	mode=$1 runner=$2
	$runner sh "$T/build.sh" >"$T/build.$mode.out" 2>"$T/build.$mode.err"
	rc=$?
	if [ $rc -ne 0 ]; then
		fail "build on $mode failed with status $(describe_rc $rc)"
		show_tail "$T/build.$mode.err" 20
		return 1
	fi
	rm -rf "${T:?}/$mode" && mv "$SRC/out" "$T/$mode"
}

start=$(elapsed)
build glibc without_sheaf || fatal "the reference build on glibc must work"
sheaf_log "glibc build: $(($(elapsed) - start)) s"
start=$(elapsed)
build sheaf with_sheaf
sheaf_rc=$?
sheaf_log "sheaf build: $(($(elapsed) - start)) s"

if [ $sheaf_rc -eq 0 ]; then
	pass "build on sheaf succeeded"
	# Compiler warnings and messages must be the same (tables removed).
	strip_stats "$T/build.sheaf.err" >"$T/build.sheaf.err.stripped"
	if cmp -s "$T/build.glibc.err" "$T/build.sheaf.err.stripped"; then
		pass "compiler diagnostics identical"
	else
		fail "compiler diagnostics differ"
		diff "$T/build.glibc.err" "$T/build.sheaf.err.stripped" | head -n 10
	fi
	same=0 differ=0
	for f in "$T/glibc"/*; do
		b=$(basename "$f")
		if cmp -s "$f" "$T/sheaf/$b"; then
			same=$((same + 1))
		else
			differ=$((differ + 1))
			fail "$b differs between the glibc and the sheaf build"
		fi
	done
	[ $differ -eq 0 ] && pass "all $same build products (objects, executables, assembly) are byte-identical"

	# The programs themselves: same output on either malloc.  Running them
	# on sheaf too is one more sheaf client (realloc-grown buffers, strdup,
	# a growing hash table).
	for p in wordfreq wordfreq2 onestep lto; do
		[ -x "$T/sheaf/$p" ] || { fail "$p was not built"; continue; }
		"$T/glibc/$p" >"$T/$p.glibc.out" 2>&1
		COMPARE_STDERR=1 compare_run "run $p (sheaf build)" 1000 "$T/sheaf/$p"
		if ! cmp -s "$T/$p.glibc.out" "$T/run_${p}__sheaf_build_.ref.out"; then
			fail "$p: program built on sheaf prints something else than the one built on glibc"
		fi
	done
fi

check_no_diag "$T/build.sheaf.err" "build"
# cc1 on gen.c alone does tens of thousands of mallocs; 10000 is a floor
# that no compiler process could reach if the preload did not take.
check_totals "$T/build.sheaf.err" 10000 "gcc tool chain on sheaf"
sheaf_log "processes that printed totals: $SHEAF_T_PROCS (driver, cc1, as, collect2, ld, lto1 ...)"

sheaf_finish
