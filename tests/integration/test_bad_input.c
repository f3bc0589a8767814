/*
 * test_bad_input.c - bad pointers get a clear outcome, never silent corruption.
 *
 * What it proves: each kind of bad pointer handed to sheaf (an interior
 * pointer, a double free, a pointer sheaf never handed out - stack, global,
 * mmap - and the same for large blocks; a double free after the first free
 * travelled on to the slabs or happened in another thread; realloc of an
 * invalid, a freed or an interior pointer; for caches an object of another
 * cache, an interior pointer, a double free, a large malloc block) is
 * diagnosed with one line on stderr that names the function, the kind of
 * error and the very address that was passed (0x%lx), and then:
 *   - by default the process dies of SIGABRT (glibc's convention);
 *   - with SHEAF_OPTIONS=abort_on_error=0 the process goes on, the bad free
 *     is ignored (a live block stays live and intact, a freed block is not
 *     handed out twice), and the allocator keeps working under load.
 *
 * How: each case runs in a child that re-executes this binary with
 * "--case NAME", so SHEAF_OPTIONS is read at the child's start-up, as a real
 * program would.  The child's stdout and stderr go to a pipe; the child writes
 * "bad-input: passing 0x..." before the bad call so that the parent knows the
 * address to expect in the diagnostic.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sheaf.h"
#include "check.h"

#define ANNOUNCE "bad-input: passing "
#define SURVIVED "bad-input: survived the bad call"
#define STRESS_OK "bad-input: allocator works afterwards"

/* Keeps the compiler from reasoning about (or warning on) the bad calls. */
static void *hide(void *p)
{
	__asm__ volatile("" : "+r"(p) : : "memory");
	return p;
}

/* ------------------------------------------------------- child side ---- */

static void child_say(const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = write(2, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* Tells the parent which address the diagnostic must name (no stdio: the
 * allocator may be about to abort). */
static void announce(const void *p)
{
	char buf[64];
	snprintf(buf, sizeof(buf), ANNOUNCE "0x%lx\n", (unsigned long)(uintptr_t)p);
	child_say(buf);
}

static void fill_words(void *p, size_t size, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t i = 0; i < size / 8; i++)
		w[i] = seed ^ (i * 0x9e3779b97f4a7c15ull);
}

static bool check_words(const void *p, size_t size, uint64_t seed)
{
	const uint64_t *w = hide((void *)p);
	for (size_t i = 0; i < size / 8; i++)
		if (w[i] != (seed ^ (i * 0x9e3779b97f4a7c15ull)))
			return false;
	return true;
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * After a bad call that was reported and survived: `n` blocks of `size`
 * bytes (from `cache` when it is not NULL) all live at once must not overlap
 * each other nor `keep` (a block that is still allocated), and must hold
 * their contents; then a mixed malloc load must run clean.
 */
static bool stress_after(size_t size, struct sheaf_cache *cache, const void *keep, size_t keep_size)
{
	enum { N = 600 };
	static void *v[N];
	static uintptr_t sorted[N];
	bool ok = true;
	/* At most ~64 MiB of blocks of this size (16 at least). */
	int n = size * N > (64u << 20) ? (int)((64u << 20) / size) : N;
	if (n < 16)
		n = 16;

	for (int i = 0; i < n; i++) {
		v[i] = cache ? sheaf_cache_alloc(cache) : malloc(size);
		if (!v[i]) {
			child_say("bad-input: allocation failed after the bad call\n");
			return false;
		}
		fill_words(v[i], size, (uint64_t)i << 32);
		sorted[i] = (uintptr_t)v[i];
	}
	qsort(sorted, (size_t)n, sizeof(sorted[0]), cmp_ptr);
	for (int i = 0; i + 1 < n; i++)
		if (sorted[i] + size > sorted[i + 1]) {
			child_say("bad-input: two live blocks overlap after the bad call\n");
			ok = false;
		}
	for (int i = 0; i < n; i++) {
		uintptr_t a = (uintptr_t)v[i];
		if (keep && a < (uintptr_t)keep + keep_size && (uintptr_t)keep < a + size) {
			child_say("bad-input: a live block was handed out again\n");
			ok = false;
		}
		if (!check_words(v[i], size, (uint64_t)i << 32)) {
			child_say("bad-input: block contents changed after the bad call\n");
			ok = false;
		}
	}
	for (int i = 0; i < n; i++) {
		if (cache)
			sheaf_cache_free(cache, v[i]);
		else
			free(v[i]);
	}

	/* Mixed sizes, a few rounds, contents checked. */
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < N; i++) {
			size_t sz = (size_t)8 << ((i * 7 + round) % 15); /* 8 B .. 128 KiB */
			v[i] = malloc(sz);
			if (!v[i]) {
				child_say("bad-input: malloc failed in the load after the bad call\n");
				return false;
			}
			fill_words(v[i], sz, (uint64_t)(i + round * N));
		}
		for (int i = 0; i < N; i++) {
			size_t sz = (size_t)8 << ((i * 7 + round) % 15);
			if (!check_words(v[i], sz, (uint64_t)(i + round * N))) {
				child_say("bad-input: corrupted block in the later load\n");
				ok = false;
			}
			free(v[i]);
		}
	}
	return ok;
}

static char global_buf[256] __attribute__((aligned(64)));

struct bad_case {
	const char *name;
	/* Runs in the child: does the bad call (announcing the address first),
	 * returns whether what follows checks out when it survives. */
	bool (*run)(void);
	/* The diagnostic line contains one of these (NULL-terminated)... */
	const char *kinds[3];
	/* ...and this, when not NULL. */
	const char *also;
};

static bool case_interior_small(void)
{
	uint8_t *p = malloc(64);
	fill_words(p, 64, 1);
	announce(p + 8);
	free(hide(p + 8));
	child_say(SURVIVED "\n");
	/* The block stays allocated ("leak the block"), untouched. */
	bool ok = check_words(p, 64, 1);
	if (!ok)
		child_say("bad-input: the block changed after a rejected interior free\n");
	return stress_after(64, NULL, p, 64) && ok;
}

static bool case_double_small(void)
{
	void *p = malloc(64);
	void *again = hide(p); /* the same address, opaque to -Wuse-after-free */
	free(p);
	announce(again);
	free(again);
	child_say(SURVIVED "\n");
	return stress_after(64, NULL, NULL, 0);
}

/* The second free comes after other frees and other allocations. */
static bool case_double_small_later(void)
{
	void *p = malloc(48), *q = malloc(48), *r = malloc(200);
	void *again = hide(p);
	free(p);
	free(q);
	free(r);
	void *other[32];
	for (int i = 0; i < 32; i++)
		other[i] = malloc(1000);
	announce(again);
	free(again);
	child_say(SURVIVED "\n");
	for (int i = 0; i < 32; i++)
		free(other[i]);
	return stress_after(48, NULL, NULL, 0);
}

static bool case_stack(void)
{
	char buf[128];
	memset(buf, 1, sizeof(buf));
	announce(buf + 16);
	free(hide(buf + 16));
	child_say(SURVIVED "\n");
	return stress_after(64, NULL, NULL, 0) && buf[100] == 1;
}

static bool case_global(void)
{
	announce(global_buf);
	free(hide(global_buf));
	child_say(SURVIVED "\n");
	return stress_after(64, NULL, NULL, 0);
}

static bool case_mmap(void)
{
	size_t len = 1u << 20;
	uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		child_say("bad-input: mmap failed\n");
		return false;
	}
	announce(m + 4096);
	free(hide(m + 4096));
	child_say(SURVIVED "\n");
	return stress_after(4096, NULL, NULL, 0);
}

static bool case_realloc_invalid(void)
{
	announce(global_buf + 64);
	void *r = realloc(hide(global_buf + 64), 100);
	child_say(SURVIVED "\n");
	if (r == (void *)(global_buf + 64))
		return false;
	return stress_after(100, NULL, NULL, 0);
}

static bool case_double_large(void)
{
	void *p = malloc(1u << 20);
	memset(p, 1, 1u << 20);
	void *again = hide(p);
	free(p);
	announce(again);
	free(again);
	child_say(SURVIVED "\n");
	return stress_after(1u << 20, NULL, NULL, 0);
}

static bool case_interior_large(void)
{
	uint8_t *p = malloc(1u << 20);
	fill_words(p, 1u << 20, 7);
	announce(p + 4096);
	free(hide(p + 4096));
	child_say(SURVIVED "\n");
	bool ok = check_words(p, 1u << 20, 7);
	if (!ok)
		child_say("bad-input: the large block changed after a rejected interior free\n");
	return stress_after(1u << 20, NULL, p, 1u << 20) && ok;
}

static bool case_interior_large_16(void)
{
	uint8_t *p = malloc(1u << 20);
	fill_words(p, 1u << 20, 8);
	announce(p + 16);
	free(hide(p + 16));
	child_say(SURVIVED "\n");
	bool ok = check_words(p, 1u << 20, 8);
	return stress_after(1u << 20, NULL, p, 1u << 20) && ok;
}

static bool case_cache_foreign(void)
{
	struct sheaf_cache *a = sheaf_cache_create("bad-a", 64, 0, 0, NULL);
	struct sheaf_cache *b = sheaf_cache_create("bad-b", 64, 0, 0, NULL);
	void *obj = sheaf_cache_alloc(a);
	void *keep = sheaf_cache_alloc(b);
	fill_words(obj, 64, 9);
	announce(obj);
	sheaf_cache_free(b, hide(obj));
	child_say(SURVIVED "\n");
	/* Neither cache took the object: b must not hand it out. */
	bool ok = check_words(obj, 64, 9);
	ok = stress_after(64, b, obj, 64) && ok;
	sheaf_cache_free(a, obj);
	sheaf_cache_free(b, keep);
	return ok;
}

static bool case_cache_from_malloc(void)
{
	struct sheaf_cache *c = sheaf_cache_create("bad-c", 100, 0, 0, NULL);
	void *p = malloc(100);
	fill_words(p, 96, 10);
	announce(p);
	sheaf_cache_free(c, hide(p));
	child_say(SURVIVED "\n");
	bool ok = check_words(p, 96, 10);
	ok = stress_after(100, c, p, 100) && ok;
	free(p);
	return ok;
}

/*
 * The second free comes after the first one travelled: many frees of the
 * same size class in between push the thread's sheaves out to the barn and
 * the slabs.  q (allocated next to p) keeps p's slab alive.
 */
static bool case_double_after_churn(void)
{
	enum { N = 5000 };
	static void *v[N];
	for (int i = 0; i < N; i++)
		v[i] = malloc(64);
	void *p = malloc(64), *q = malloc(64);
	void *again = hide(p);
	free(p);
	for (int i = 0; i < N; i++)
		free(v[i]);
	announce(again);
	free(again);
	child_say(SURVIVED "\n");
	bool ok = stress_after(64, NULL, q, 64);
	free(q);
	return ok;
}

static void *free_in_thread(void *p)
{
	free(p);
	return NULL;
}

/* First free in another thread, second here. */
static bool case_double_cross_thread(void)
{
	pthread_t t;
	void *p = malloc(200);
	void *again = hide(p);
	if (pthread_create(&t, NULL, free_in_thread, p) != 0 || pthread_join(t, NULL) != 0)
		return false;
	announce(again);
	free(again);
	child_say(SURVIVED "\n");
	return stress_after(200, NULL, NULL, 0);
}

static bool case_realloc_freed(void)
{
	void *p = malloc(100);
	void *again = hide(p);
	free(p);
	announce(again);
	void *r = realloc(again, 300);
	child_say(SURVIVED "\n");
	(void)r; /* whatever it is, the load below must run clean */
	return stress_after(100, NULL, NULL, 0);
}

static bool case_realloc_interior(void)
{
	uint8_t *p = malloc(256);
	fill_words(p, 256, 12);
	announce(p + 32);
	void *r = realloc(hide(p + 32), 1000);
	child_say(SURVIVED "\n");
	bool ok = r == NULL && check_words(p, 256, 12);
	if (!ok)
		child_say("bad-input: a rejected realloc returned a block or changed the old one\n");
	return stress_after(256, NULL, p, 256) && ok;
}

static bool case_cache_interior(void)
{
	struct sheaf_cache *c = sheaf_cache_create("bad-interior", 64, 0, 0, NULL);
	uint8_t *obj = sheaf_cache_alloc(c);
	fill_words(obj, 64, 13);
	announce(obj + 8);
	sheaf_cache_free(c, hide(obj + 8));
	child_say(SURVIVED "\n");
	bool ok = check_words(obj, 64, 13);
	ok = stress_after(64, c, obj, 64) && ok;
	sheaf_cache_free(c, obj);
	return ok;
}

static bool case_cache_double(void)
{
	struct sheaf_cache *c = sheaf_cache_create("bad-double", 64, 0, 0, NULL);
	void *obj = sheaf_cache_alloc(c);
	void *again = hide(obj);
	sheaf_cache_free(c, obj);
	announce(again);
	sheaf_cache_free(c, again);
	child_say(SURVIVED "\n");
	return stress_after(64, c, NULL, 0);
}

static bool case_cache_large(void)
{
	struct sheaf_cache *c = sheaf_cache_create("bad-large", 64, 0, 0, NULL);
	void *p = malloc(1u << 20);
	announce(p);
	sheaf_cache_free(c, hide(p));
	child_say(SURVIVED "\n");
	bool ok = stress_after(64, c, NULL, 0);
	free(p);
	return ok;
}

#define INVALID_KINDS { "sheaf: free(): invalid pointer 0x", NULL }

static const struct bad_case cases[] = {
	{ "interior_small", case_interior_small, { "sheaf: free(): interior pointer", NULL }, NULL },
	{ "double_small", case_double_small, { "sheaf: free(): double free of 0x", NULL }, NULL },
	{ "double_small_later", case_double_small_later,
	  { "sheaf: free(): double free of 0x", NULL }, NULL },
	{ "stack", case_stack, INVALID_KINDS, "not allocated by sheaf" },
	{ "global", case_global, INVALID_KINDS, "not allocated by sheaf" },
	{ "mmap", case_mmap, INVALID_KINDS, "not allocated by sheaf" },
	{ "realloc_invalid", case_realloc_invalid, { "sheaf: realloc(): invalid pointer", NULL },
	  NULL },
	{ "double_large", case_double_large, { "sheaf: free(): double free of 0x", NULL }, NULL },
	{ "interior_large", case_interior_large,
	  { "sheaf: free(): interior pointer", "sheaf: free(): invalid pointer", NULL }, NULL },
	{ "interior_large_16", case_interior_large_16,
	  { "sheaf: free(): interior pointer", "sheaf: free(): invalid pointer", NULL }, NULL },
	{ "double_after_churn", case_double_after_churn,
	  { "sheaf: free(): double free of 0x", NULL }, NULL },
	{ "double_cross_thread", case_double_cross_thread,
	  { "sheaf: free(): double free of 0x", NULL }, NULL },
	{ "realloc_freed", case_realloc_freed, { "sheaf: realloc(): ", NULL }, NULL },
	{ "realloc_interior", case_realloc_interior, { "sheaf: realloc(): ", NULL }, NULL },
	{ "cache_foreign", case_cache_foreign, { "sheaf_cache_free()", NULL }, NULL },
	{ "cache_interior", case_cache_interior, { "sheaf_cache_free()", NULL }, NULL },
	{ "cache_double", case_cache_double, { "sheaf_cache_free()", NULL }, NULL },
	{ "cache_large", case_cache_large, { "sheaf_cache_free()", NULL }, NULL },
	{ "cache_from_malloc", case_cache_from_malloc, { "sheaf_cache_free()", NULL }, NULL },
};
#define NR_CASES (sizeof(cases) / sizeof(cases[0]))

static int run_case_in_child(const char *name)
{
	for (size_t i = 0; i < NR_CASES; i++)
		if (strcmp(cases[i].name, name) == 0) {
			bool ok = cases[i].run();
			if (ok)
				child_say(STRESS_OK "\n");
			return ok ? 0 : 3;
		}
	child_say("bad-input: unknown case\n");
	return 2;
}

/* ------------------------------------------------------ parent side ---- */

struct outcome {
	int status;
	char out[16384];   /* child's stdout+stderr, NUL-terminated, truncated */
};

static void run_child(const char *self, const char *name, bool keep_going, struct outcome *o)
{
	int fd[2];
	REQUIRE(pipe(fd) == 0);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core);
		dup2(fd[1], 1);
		dup2(fd[1], 2);
		close(fd[0]);
		close(fd[1]);
		/* Later settings win in SHEAF_OPTIONS: keep whatever else the
		 * caller set and force abort_on_error. */
		const char *opt = keep_going ? "abort_on_error=0" : "abort_on_error=1";
		const char *old = getenv("SHEAF_OPTIONS");
		char buf[1024];
		if (old && *old)
			snprintf(buf, sizeof(buf), "%s:%s", old, opt);
		else
			snprintf(buf, sizeof(buf), "%s", opt);
		setenv("SHEAF_OPTIONS", buf, 1);
		alarm(60); /* a hang becomes a SIGALRM the parent reports */
		execl("/proc/self/exe", self, "--case", name, (char *)NULL);
		execl(self, self, "--case", name, (char *)NULL); /* no /proc */
		_exit(127);
	}
	close(fd[1]);
	size_t len = 0;
	char sink[4096];
	for (;;) {
		char *dst = len < sizeof(o->out) - 1 ? o->out + len : sink;
		size_t room = len < sizeof(o->out) - 1 ? sizeof(o->out) - 1 - len : sizeof(sink);
		ssize_t r = read(fd[0], dst, room);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (dst != sink)
			len += (size_t)r;
	}
	o->out[len] = '\0';
	close(fd[0]);
	while (waitpid(pid, &o->status, 0) < 0)
		REQUIRE(errno == EINTR);
}

/* The line of `text` that contains `needle`, copied to `line`; false if none. */
static bool find_line(const char *text, const char *needle, char *line, size_t cap)
{
	const char *hit = strstr(text, needle);
	if (!hit)
		return false;
	const char *start = hit;
	while (start > text && start[-1] != '\n')
		start--;
	const char *end = strchr(hit, '\n');
	size_t n = end ? (size_t)(end - start) : strlen(start);
	if (n >= cap)
		n = cap - 1;
	memcpy(line, start, n);
	line[n] = '\0';
	return true;
}

/* Does `line` contain `addr` ("0x...") as a whole token? */
static bool has_address(const char *line, const char *addr)
{
	size_t n = strlen(addr);
	for (const char *s = strstr(line, addr); s; s = strstr(s + 1, addr)) {
		char next = s[n];
		bool hex = (next >= '0' && next <= '9') || (next >= 'a' && next <= 'f') ||
			   (next >= 'A' && next <= 'F');
		if (!hex)
			return true;
	}
	return false;
}

static void dump(const char *name, const char *mode, const struct outcome *o)
{
	fprintf(stderr, "---- %s (%s): child output ----\n%s---- end ----\n", name, mode, o->out);
}

static void check_case(const char *self, const struct bad_case *c, bool keep_going)
{
	static struct outcome o;
	const char *mode = keep_going ? "abort_on_error=0" : "default";
	char line[1024], addr[64];
	bool ok = true;

	run_child(self, c->name, keep_going, &o);

	/* The address the child passed. */
	const char *a = strstr(o.out, ANNOUNCE);
	CHECKF(a != NULL, "%s (%s): the child did not reach the bad call", c->name, mode);
	if (!a) {
		dump(c->name, mode, &o);
		return;
	}
	a += strlen(ANNOUNCE);
	size_t n = strcspn(a, "\n");
	if (n >= sizeof(addr))
		n = sizeof(addr) - 1;
	memcpy(addr, a, n);
	addr[n] = '\0';

	/* The diagnostic: one of the expected kinds, naming that address. */
	bool found = false;
	for (int k = 0; c->kinds[k] && !found; k++)
		found = find_line(a, c->kinds[k], line, sizeof(line));
	CHECKF(found, "%s (%s): no diagnostic containing \"%s\"", c->name, mode, c->kinds[0]);
	ok &= found;
	if (found) {
		bool named = has_address(line, addr);
		CHECKF(named, "%s (%s): diagnostic does not name %s: \"%s\"", c->name, mode, addr,
		       line);
		ok &= named;
		if (c->also) {
			bool also = strstr(line, c->also) != NULL;
			CHECKF(also, "%s (%s): diagnostic lacks \"%s\": \"%s\"", c->name, mode, c->also,
			       line);
			ok &= also;
		}
	}

	if (!keep_going) {
		bool aborted = WIFSIGNALED(o.status) && WTERMSIG(o.status) == SIGABRT;
		CHECKF(aborted, "%s (%s): child %s %d, want death by SIGABRT", c->name, mode,
		       WIFSIGNALED(o.status) ? "died of signal" : "exited with",
		       WIFSIGNALED(o.status) ? WTERMSIG(o.status) : WEXITSTATUS(o.status));
		bool stopped = strstr(o.out, SURVIVED) == NULL;
		CHECKF(stopped, "%s (%s): the child went on after the diagnostic", c->name, mode);
		ok &= aborted && stopped;
	} else {
		bool exited = WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0;
		CHECKF(exited, "%s (%s): child %s %d, want exit 0", c->name, mode,
		       WIFSIGNALED(o.status) ? "died of signal" : "exited with",
		       WIFSIGNALED(o.status) ? WTERMSIG(o.status) : WEXITSTATUS(o.status));
		bool stressed = strstr(o.out, STRESS_OK) != NULL;
		CHECKF(stressed, "%s (%s): the allocator misbehaved after the bad call", c->name,
		       mode);
		ok &= exited && stressed;
	}
	if (!ok)
		dump(c->name, mode, &o);
	else
		printf("ok: %-20s %-17s %s\n", c->name, mode, line);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--case") == 0)
		return run_case_in_child(argv[2]);

	/* `test_bad_input NAME...` runs only those cases. */
	for (size_t i = 0; i < NR_CASES; i++) {
		bool wanted = argc < 2;
		for (int j = 1; j < argc; j++)
			wanted |= strcmp(argv[j], cases[i].name) == 0;
		if (!wanted)
			continue;
		check_case(argv[0], &cases[i], false);
		check_case(argv[0], &cases[i], true);
	}
	return check_done("test_bad_input");
}
