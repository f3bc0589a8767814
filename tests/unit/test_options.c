/*
 * test_options.c - the SHEAF_OPTIONS parser.
 *
 * What it proves:
 *   - options_defaults() sets every option to the default of the table in
 *     internal.h (checked against the X-macro itself, so it holds whatever
 *     the defaults become) and restores them after any parse;
 *   - options_parse() accepts NULL and the empty string (nothing changes, no
 *     problem), a bare bool name (= 1), bool words (1/0, true/false, yes/no,
 *     on/off), sizes with k/m/g suffixes (either case) up to the largest
 *     value that fits, uints up to 2^32 - 1, ':' and ',' as separators (also
 *     mixed, doubled and trailing);
 *   - each problem counts once and leaves the option as it was, while the
 *     rest of the string still applies: an unknown name, a bad value
 *     ("large_cache=12q", "barn_full=-1", "barn_full=99999999999", a suffix
 *     on a uint, "stats=maybe", a value that overflows), a size or uint
 *     without a value, and a 10 KB long value or name (no overflow, no
 *     crash);
 *   - with report=false nothing is written to stderr; with report=true each
 *     problem is reported on stderr (long names and values cut short), and
 *     "help" prints the option table without counting as a problem.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"

static void set_defaults_from_table(struct sheaf_opts *o)
{
	memset(o, 0, sizeof(*o));
#define OPT_DEF(type, name, def, help) o->name = (def);
	SHEAF_OPTIONS(OPT_DEF)
#undef OPT_DEF
}

/* Field by field (no padding compared); `say` prints the differences. */
static bool opts_same(const struct sheaf_opts *a, const struct sheaf_opts *b, bool say)
{
	bool eq = true;
#define OPT_EQ(type, name, def, help)                                                      \
	if (a->name != b->name) {                                                          \
		if (say)                                                                   \
			fprintf(stderr, "  option %s: %llu, want %llu\n", #name,           \
				(unsigned long long)a->name, (unsigned long long)b->name);  \
		eq = false;                                                                \
	}
	SHEAF_OPTIONS(OPT_EQ)
#undef OPT_EQ
	return eq;
}

static bool opts_equal(const struct sheaf_opts *a, const struct sheaf_opts *b)
{
	return opts_same(a, b, true);
}

static struct sheaf_opts defaults;

/* Parses `s` (quietly) into a fresh set of defaults. */
static int parse(struct sheaf_opts *o, const char *s)
{
	*o = defaults;
	return options_parse(o, s, false);
}

/* ------------------------------------------------------ stderr capture */

static int saved_fd = -1;
static FILE *capture;

static void capture_begin(void)
{
	fflush(stderr);
	capture = tmpfile();
	REQUIRE(capture != NULL);
	saved_fd = dup(2);
	REQUIRE(saved_fd >= 0);
	REQUIRE(dup2(fileno(capture), 2) == 2);
}

/* Ends the capture; returns what was written (malloc'd, NUL-terminated). */
static char *capture_end(void)
{
	fflush(stderr);
	REQUIRE(dup2(saved_fd, 2) == 2);
	close(saved_fd);
	/* diag writes with write(2): ask the file, not the FILE. */
	off_t n = lseek(fileno(capture), 0, SEEK_END);
	REQUIRE(n >= 0);
	char *buf = calloc((size_t)n + 1, 1);
	REQUIRE(buf != NULL);
	REQUIRE(lseek(fileno(capture), 0, SEEK_SET) == 0);
	size_t got = 0;
	while (got < (size_t)n) {
		ssize_t r = read(fileno(capture), buf + got, (size_t)n - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	fclose(capture);
	return buf;
}

/* -------------------------------------------------------------- tests */

static void test_defaults(void)
{
	struct sheaf_opts o, want;
	set_defaults_from_table(&want);
	memset(&o, 0xff, sizeof(o));
	options_defaults(&o);
	CHECK(opts_equal(&o, &want));
	defaults = o;
	/* sheaf_init() parsed the (absent) environment: the global is the
	 * defaults unless the environment says otherwise. */
	if (!getenv("SHEAF_OPTIONS") && !getenv("SHEAF_STATS"))
		CHECK(opts_equal(&sheaf_opt, &want));
}

static void test_good(void)
{
	struct sheaf_opts o, want;

	CHECK(parse(&o, NULL) == 0 && opts_equal(&o, &defaults));
	CHECK(parse(&o, "") == 0 && opts_equal(&o, &defaults));
	CHECK(parse(&o, ":,::,") == 0 && opts_equal(&o, &defaults));

	CHECK(parse(&o, "stats") == 0 && o.stats);
	want = defaults;
	want.stats = true;
	CHECK(opts_equal(&o, &want));
	o.stats = true;
	CHECK(options_parse(&o, "stats=0", false) == 0 && !o.stats);

	static const struct {
		const char *s;
		bool v;
	} bools[] = {
		{ "1", true }, { "true", true }, { "yes", true }, { "on", true },
		{ "0", false }, { "false", false }, { "no", false }, { "off", false },
	};
	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		char buf[64];
		snprintf(buf, sizeof(buf), "abort_on_error=%s", bools[i].s);
		o = defaults;
		o.abort_on_error = !bools[i].v;
		CHECKF(options_parse(&o, buf, false) == 0 && o.abort_on_error == bools[i].v, "%s", buf);
	}

	CHECK(parse(&o, "abort_on_error=no:large_cache=16m") == 0);
	want = defaults;
	want.abort_on_error = false;
	want.large_cache = (size_t)16 << 20;
	CHECK(opts_equal(&o, &want));

	CHECK(parse(&o, "barn_full=4,barn_empty=8") == 0);
	want = defaults;
	want.barn_full = 4;
	want.barn_empty = 8;
	CHECK(opts_equal(&o, &want));
	CHECK(parse(&o, "barn_full=4:barn_empty=8") == 0 && opts_equal(&o, &want));
	CHECK(parse(&o, "barn_full=4,,barn_empty=8:") == 0 && opts_equal(&o, &want));
	/* The last of repeated settings wins. */
	CHECK(parse(&o, "barn_full=1:barn_full=4,barn_empty=8") == 0 && opts_equal(&o, &want));

	static const struct {
		const char *s;
		size_t v;
	} sizes[] = {
		{ "large_cache=0", 0 },
		{ "large_cache=123", 123 },
		{ "large_cache=7k", (size_t)7 << 10 },
		{ "large_cache=7K", (size_t)7 << 10 },
		{ "large_cache=3M", (size_t)3 << 20 },
		{ "large_cache=2g", (size_t)2 << 30 },
		{ "large_cache=17179869183g", (size_t)17179869183 << 30 },
		{ "large_cache=18446744073709551615", SIZE_MAX },
		{ "large_cache=00000000000000000042", 42 },
	};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int n = parse(&o, sizes[i].s);
		CHECKF(n == 0 && o.large_cache == sizes[i].v, "%s: %d problems, value %zu", sizes[i].s,
		       n, o.large_cache);
	}
	CHECK(parse(&o, "barn_full=4294967295") == 0 && o.barn_full == 4294967295u);
	CHECK(parse(&o, "slab_reserve=0") == 0 && o.slab_reserve == 0);
	CHECK(parse(&o, "sheaf_capacity=32:large_cache_max=1m:slab_reserve=5") == 0 &&
	      o.sheaf_capacity == 32 && o.large_cache_max == ((size_t)1 << 20) && o.slab_reserve == 5);
}

static void test_problems(void)
{
	struct sheaf_opts o, want;

	/* Unknown option: one problem, the rest applied. */
	CHECK(parse(&o, "no_such_option=1:stats") == 1);
	want = defaults;
	want.stats = true;
	CHECK(opts_equal(&o, &want));
	CHECK(parse(&o, "stats:bogus,barn_full=3") == 1 && o.stats && o.barn_full == 3);
	/* A prefix or an extension of a name is not the name. */
	CHECK(parse(&o, "stat=1") == 1 && opts_equal(&o, &defaults));
	CHECK(parse(&o, "statsx=1") == 1 && opts_equal(&o, &defaults));
	CHECK(parse(&o, "large_cache_maxx=1") == 1 && opts_equal(&o, &defaults));

	static const char *const bad[] = {
		"large_cache=12q", "large_cache=", "large_cache=k", "large_cache=12kb",
		"large_cache=-1", "large_cache= 12", "large_cache=12 ", "large_cache=0x10",
		"large_cache=18446744073709551616", "large_cache=99999999999999999999",
		"large_cache=17179869184g",
		"barn_full=-1", "barn_full=99999999999", "barn_full=4294967296", "barn_full=4k",
		"barn_full=", "barn_full", "large_cache", "barn_full=1.5",
		"stats=maybe", "stats=2", "stats=TRUE", "stats==1", "abort_on_error=nope",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int n = parse(&o, bad[i]);
		CHECKF(n == 1 && opts_equal(&o, &defaults), "\"%s\": %d problems", bad[i], n);
	}
	/* Several problems, each counted; the good ones between apply. */
	CHECK(parse(&o, "barn_full=x:barn_empty=3,foo,stats=maybe:slab_reserve=2") == 3 &&
	      o.barn_empty == 3 && o.slab_reserve == 2 && o.barn_full == defaults.barn_full &&
	      o.stats == defaults.stats);

	/* Very long values and names. */
	enum { LONG = 10 * 1024 };
	char *s = malloc(LONG + 4096);
	REQUIRE(s != NULL);
	strcpy(s, "large_cache=");
	memset(s + strlen(s), '7', LONG);
	s[12 + LONG] = '\0';
	CHECK(parse(&o, s) == 1 && opts_equal(&o, &defaults));
	strcpy(s + 12 + LONG, ":stats");
	CHECK(parse(&o, s) == 1 && o.stats);
	memset(s, 'n', LONG);
	strcpy(s + LONG, "=1:barn_full=9");
	CHECK(parse(&o, s) == 1 && o.barn_full == 9);
	strcpy(s, "stats=");
	memset(s + 6, 'y', LONG);
	s[6 + LONG] = '\0';
	CHECK(parse(&o, s) == 1 && opts_equal(&o, &defaults));
	/* A long run of separators and a very long list of good settings. */
	memset(s, ':', LONG);
	s[LONG] = '\0';
	CHECK(parse(&o, s) == 0 && opts_equal(&o, &defaults));
	size_t len = 0;
	while (len + 32 < LONG)
		len += (size_t)snprintf(s + len, LONG + 4096 - len, "barn_empty=%zu,", len % 1000);
	CHECK(parse(&o, s) == 0);

	/* Reporting: quiet when asked, one line per problem otherwise, long
	 * names and values cut short. */
	capture_begin();
	o = defaults;
	int n1 = options_parse(&o, "bogus:stats=maybe:barn_full", false);
	char *quiet = capture_end();
	CHECK(n1 == 3);
	CHECKF(quiet[0] == '\0', "report=false wrote \"%.200s\"", quiet);
	free(quiet);

	memset(s, 'n', LONG);
	strcpy(s + LONG, "=1:stats=maybe:barn_full:large_cache=");
	len = strlen(s);
	memset(s + len, '9', 2000);
	s[len + 2000] = '\0';
	capture_begin();
	o = defaults;
	int n2 = options_parse(&o, s, true);
	char *loud = capture_end();
	CHECK(n2 == 4);
	size_t lines = 0;
	for (const char *p = loud; *p; p++)
		lines += *p == '\n';
	CHECKF(lines == 4, "%zu lines reported for 4 problems:\n%s", lines, loud);
	/* Each report names what it is about. */
	CHECK(strstr(loud, "nnnnnnnn") != NULL);
	CHECK(strstr(loud, "maybe") != NULL && strstr(loud, "stats") != NULL);
	CHECK(strstr(loud, "barn_full") != NULL && strstr(loud, "large_cache") != NULL);
	CHECKF(strlen(loud) < 1000, "reports of long names/values not cut short (%zu bytes)",
	       strlen(loud));
	free(loud);
	free(s);

	/* help: printed, not a problem, nothing changed. */
	capture_begin();
	o = defaults;
	int n3 = options_parse(&o, "help", true);
	char *help = capture_end();
	CHECK(n3 == 0 && opts_equal(&o, &defaults));
#define OPT_LISTED(type, name, def, h) \
	CHECKF(strstr(help, #name) != NULL, "help does not list %s", #name);
	SHEAF_OPTIONS(OPT_LISTED)
#undef OPT_LISTED
	free(help);
	capture_begin();
	int n4 = options_parse(&o, "help:stats", false);
	char *nohelp = capture_end();
	CHECK(n4 == 0 && o.stats && nohelp[0] == '\0');
	free(nohelp);
}

static void test_restore(void)
{
	struct sheaf_opts o = defaults;
	CHECK(options_parse(&o, "abort_on_error=0:stats:large_cache=1k:large_cache_max=2k:"
			    "barn_full=1:barn_empty=2:slab_reserve=3:sheaf_capacity=4", false) == 0);
	CHECK(!opts_same(&o, &defaults, false));
	options_defaults(&o);
	CHECK(opts_equal(&o, &defaults));
}

int main(void)
{
	sheaf_init();
	test_defaults();
	test_good();
	test_problems();
	test_restore();
	return check_done("test_options");
}
