/*
 * options.c - the one table of runtime settings (SHEAF_OPTIONS in internal.h).
 *
 * Read once at initialisation, before any allocation can be served, so the
 * parser may not allocate: it walks the environment string in place and
 * reports problems through diag (write(2), no stdio).
 *
 * Syntax: SHEAF_OPTIONS=name[=value][:name[=value]...]   (',' also separates)
 *   bool: 1/0, true/false, yes/no, on/off; a bare name means 1
 *   size: decimal with optional k/m/g suffix (powers of 1024)
 *   uint: decimal
 * "help" prints the table.  Aliases: SHEAF_STATS=1 -> stats=1.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct sheaf_opts sheaf_opt;

enum opt_type { OPT_bool, OPT_size, OPT_uint };

struct opt_desc {
	const char *name;
	enum opt_type type;
	size_t offset;
	unsigned long long def;
	const char *help;
};

static const struct opt_desc opt_table[] = {
#define OPT_DESC(type, name, def, help) \
	{ #name, OPT_##type, offsetof(struct sheaf_opts, name), (def), help },
	SHEAF_OPTIONS(OPT_DESC)
#undef OPT_DESC
};
#define NR_OPTS (sizeof(opt_table) / sizeof(opt_table[0]))

static void opt_store(struct sheaf_opts *o, const struct opt_desc *d, unsigned long long v)
{
	char *field = (char *)o + d->offset;
	switch (d->type) {
	case OPT_bool: *(bool *)field = v != 0; break;
	case OPT_size: *(size_t *)field = (size_t)v; break;
	case OPT_uint: *(unsigned int *)field = (unsigned int)v; break;
	}
}

void options_defaults(struct sheaf_opts *o)
{
	for (size_t i = 0; i < NR_OPTS; i++)
		opt_store(o, &opt_table[i], opt_table[i].def);
}

static bool word_eq(const char *s, size_t n, const char *w)
{
	return strlen(w) == n && memcmp(s, w, n) == 0;
}

/* Parses value [v, v+n) for option d; false if malformed. */
static bool opt_value(const struct opt_desc *d, const char *v, size_t n, unsigned long long *out)
{
	if (d->type == OPT_bool) {
		if (n == 0 || word_eq(v, n, "1") || word_eq(v, n, "true") || word_eq(v, n, "yes") ||
		    word_eq(v, n, "on")) {
			*out = 1;
			return true;
		}
		if (word_eq(v, n, "0") || word_eq(v, n, "false") || word_eq(v, n, "no") ||
		    word_eq(v, n, "off")) {
			*out = 0;
			return true;
		}
		return false;
	}
	if (n == 0 || n > 20)
		return false;
	unsigned long long x = 0;
	size_t i = 0;
	for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
		unsigned long long nx = x * 10 + (unsigned long long)(v[i] - '0');
		if (nx / 10 != x)
			return false;
		x = nx;
	}
	if (i == 0)
		return false;
	if (i < n) {
		unsigned int shift;
		if (d->type != OPT_size || i + 1 != n)
			return false;
		switch (v[i] | 0x20) {
		case 'k': shift = 10; break;
		case 'm': shift = 20; break;
		case 'g': shift = 30; break;
		default: return false;
		}
		if (x > (~0ull >> shift))
			return false;
		x <<= shift;
	}
	if (d->type == OPT_uint && x > 0xffffffffull)
		return false;
	*out = x;
	return true;
}

int options_parse(struct sheaf_opts *o, const char *s, bool report)
{
	int problems = 0;
	if (!s)
		return 0;
	while (*s) {
		size_t len = strcspn(s, ":,");
		const char *eq = memchr(s, '=', len);
		size_t nlen = eq ? (size_t)(eq - s) : len;
		const char *val = eq ? eq + 1 : s + len;
		size_t vlen = eq ? len - nlen - 1 : 0;
		if (len == 0)
			goto next;
		if (word_eq(s, nlen, "help")) {
			if (report)
				options_print_help();
			goto next;
		}
		const struct opt_desc *d = NULL;
		for (size_t i = 0; i < NR_OPTS; i++)
			if (word_eq(s, nlen, opt_table[i].name))
				d = &opt_table[i];
		if (!d) {
			problems++;
			if (report)
				diag_printf("sheaf: SHEAF_OPTIONS: unknown option '%.*s' ignored (SHEAF_OPTIONS=help lists them)\n",
					    (int)(nlen > 64 ? 64 : nlen), s);
			goto next;
		}
		unsigned long long v;
		if (!eq && d->type != OPT_bool) {
			problems++;
			if (report)
				diag_printf("sheaf: SHEAF_OPTIONS: option '%s' needs a value, ignored\n", d->name);
			goto next;
		}
		if (!opt_value(d, val, vlen, &v)) {
			problems++;
			if (report)
				diag_printf("sheaf: SHEAF_OPTIONS: bad value '%.*s' for option '%s', ignored\n",
					    (int)(vlen > 64 ? 64 : vlen), val, d->name);
			goto next;
		}
		opt_store(o, d, v);
next:
		s += len;
		if (*s)
			s++;
	}
	return problems;
}

void options_print_help(void)
{
	diag_printf("sheaf options (SHEAF_OPTIONS=name=value:name=value...):\n");
	for (size_t i = 0; i < NR_OPTS; i++) {
		const struct opt_desc *d = &opt_table[i];
		static const char *const tn[] = { "bool", "size", "uint" };
		diag_printf("  %-16s %-4s default %-10llu %s\n", d->name, tn[d->type], d->def, d->help);
	}
	diag_printf("aliases: SHEAF_STATS=1 (stats=1), SHEAF_STATS=json (stats=1:stats_json=1)\n");
	diag_printf("SHEAF_DEBUG=FZPU[,cache,...]: F checks on free, Z red zones, P poisoning, U call sites\n");
}

void options_init(void)
{
	options_defaults(&sheaf_opt);
	const char *st = getenv("SHEAF_STATS");
	if (st && *st && strcmp(st, "0") != 0) {
		sheaf_opt.stats = true;
		if (strcmp(st, "json") == 0)
			sheaf_opt.stats_json = true;
	}
	options_parse(&sheaf_opt, getenv("SHEAF_OPTIONS"), true);
	debug_init();
}
