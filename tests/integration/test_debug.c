/*
 * test_debug.c - each SHEAF_DEBUG flag catches the bug it exists for.
 *
 * Every case runs in a child that re-executes this program with
 * SHEAF_DEBUG set (options are read once, at the first allocation), makes
 * one mistake, and must die of SIGABRT with the expected report on stderr;
 * the "ok" cases must not report anything.  With abort_on_error=0 the
 * report is printed, the damage repaired, and the child goes on.
 *
 *   Z  overflow past the size asked for; underflow before the object
 *   P  a write after free, found when the object is allocated again
 *   F  a double free, found exactly by the slab bitmap
 *   U  the report names where the object was allocated and freed
 *   sheaf_debug_check() finds a damaged red zone on demand
 *   prof_sample: the heap profiler reports the site holding live memory
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "sheaf.h"

static void __attribute__((noinline)) bug_overflow(void)
{
	char *volatile p = malloc(40);
	memset(p, 'A', 41);   /* one byte past what was asked for */
	free(p);
}

static void __attribute__((noinline)) bug_underflow(void)
{
	char *volatile p = malloc(64);
	p[-3] = 1;
	free(p);
}

static void __attribute__((noinline)) bug_uaf(void)
{
	char *volatile p = malloc(100);
	free(p);
	p[10] = 'x';
	void *q[256];
	for (int i = 0; i < 256; i++)
		q[i] = malloc(100);   /* one of them is p again: poison checked */
	for (int i = 0; i < 256; i++)
		free(q[i]);
}

static void __attribute__((noinline)) bug_double(void)
{
	void *volatile p = malloc(64);
	free(p);
	free(p);
}

static void __attribute__((noinline)) bug_check(void)
{
	char *volatile p = malloc(64);
	((volatile char *)p)[64 + 2] = 1;   /* in the red zone after the object */
	int problems = sheaf_debug_check();
	printf("check found %d\n", problems);
	exit(problems == 1 ? 0 : 3);
}

static void __attribute__((noinline)) clean(void)
{
	for (int i = 0; i < 20000; i++) {
		char *p = malloc((size_t)(i % 700) + 1);
		memset(p, 1, (size_t)(i % 700) + 1);
		p = realloc(p, (size_t)(i % 300) + 1);
		free(p);
	}
	void *a = aligned_alloc(64, 100);
	free(a);
	printf("check found %d\n", sheaf_debug_check());
}

/* F's slab consistency check while other threads allocate and free in
 * the same slabs: no false report (the check once ran unlocked). */
static void *churn(void *arg)
{
	void *t[64] = { 0 };
	unsigned int x = (unsigned int)(uintptr_t)arg * 2654435761u + 1;
	for (int i = 0; i < 200000; i++) {
		x = x * 1103515245u + 12345u;
		unsigned int k = (x >> 16) % 64;
		free(t[k]);
		t[k] = malloc(16);
	}
	for (int k = 0; k < 64; k++)
		free(t[k]);
	return NULL;
}

static void __attribute__((noinline)) mt_churn(void)
{
	pthread_t th[4];
	for (uintptr_t i = 0; i < 4; i++)
		if (pthread_create(&th[i], NULL, churn, (void *)i) != 0)
			exit(3);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
}

static void *kept[4096];

static void __attribute__((noinline)) prof_workload(void)
{
	for (int i = 0; i < 4096; i++)
		kept[i] = malloc(1000);   /* 4 MB live at exit, one site */
	for (int i = 0; i < 20000; i++)
		free(malloc(500));        /* churn, nothing live */
}

struct tcase {
	const char *name, *env, *expect;
	void (*fn)(void);
	int sig;   /* expected signal, 0 = exit 0 */
};

static const struct tcase cases[] = {
	{ "overflow", "FZ", "write past the 40 bytes asked for, at offset 40", bug_overflow, SIGABRT },
	{ "underflow", "Z", "red zone before the object overwritten at offset -3", bug_underflow, SIGABRT },
	{ "uaf", "P", "object written after it was freed, at offset 10 (0x78)", bug_uaf, SIGABRT },
	{ "double", "F", "BUG kmalloc-64: double free", bug_double, SIGABRT },
	{ "tracks", "FU", "freed by thread", bug_double, SIGABRT },
	{ "named", "Z,kmalloc-48", "write past the 40 bytes", bug_overflow, SIGABRT },
	{ "othercache", "Z,kmalloc-4096", NULL, clean, 0 },
	{ "check", "Z", "red zone after the object overwritten", bug_check, 0 },   /* abort_on_error=0 */
	{ "clean", "FZPU", NULL, clean, 0 },
	{ "threads", "F", NULL, mt_churn, 0 },
	{ "continue", "FZPU", "write past the 40 bytes", bug_overflow, 0 },   /* abort_on_error=0 */
	/* The heap profiler (SHEAF_OPTIONS=prof_sample): the live site is named. */
	{ "prof", "", "KiB (", prof_workload, 0 },
};

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--case")) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			if (!strcmp(cases[i].name, argv[2]))
				cases[i].fn();
		printf("survived\n");
		return 0;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *t = &cases[i];
		int fds[2];
		REQUIRE(pipe(fds) == 0);
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			dup2(fds[1], 2);
			close(fds[0]);
			setenv("SHEAF_DEBUG", t->env, 1);
			bool cont = !strcmp(t->name, "continue") || !strcmp(t->name, "check");
			setenv("SHEAF_OPTIONS", !strcmp(t->name, "prof") ? "prof_sample=64k" :
				cont ? "abort_on_error=0" : "", 1);
			execl("/proc/self/exe", argv[0], "--case", t->name, (char *)NULL);
			_exit(127);
		}
		close(fds[1]);
		char buf[16384];
		size_t len = 0;
		ssize_t r;
		while ((r = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
			len += (size_t)r;
		buf[len] = '\0';
		close(fds[0]);
		int st;
		waitpid(pid, &st, 0);
		bool ok_status = t->sig ? WIFSIGNALED(st) && WTERMSIG(st) == t->sig :
				 WIFEXITED(st) && WEXITSTATUS(st) == 0;
		bool ok_text = t->expect ? strstr(buf, t->expect) != NULL : strstr(buf, "sheaf: BUG") == NULL;
		CHECKF(ok_status, "%s: status 0x%x", t->name, st);
		CHECKF(ok_text, "%s: expected '%s' in:\n%s", t->name, t->expect ? t->expect : "(no report)", buf);
		printf("%-10s SHEAF_DEBUG=%-16s %s\n", t->name, t->env, ok_status && ok_text ? "ok" : "FAILED");
	}
	return check_done("test_debug");
}
