/*
 * fuzz_main.c - runs the fuzz target without libFuzzer (any compiler).
 *
 *   fuzz_main [-n N] [-s SEED] [-l MAXLEN] [FILE|DIR]...
 *
 * Runs LLVMFuzzerTestOneInput() on every file given (a directory: every
 * file in it), then on N random inputs (default 300, or SHEAF_FUZZ_RUNS) of
 * 1..MAXLEN bytes (default 2048) from SEED (default: time; or
 * SHEAF_FUZZ_SEED).  With no file, the committed seed corpus is run:
 * $SHEAF_SRCDIR/tests/fuzz/corpus (make check sets SHEAF_SRCDIR), else
 * tests/fuzz/corpus relative to the current directory.  A failing input
 * aborts in the target, after its message; a SIGABRT handler then names the
 * input and writes it to ./fuzz-crash-SEED-N (or says which file it was),
 * so that `fuzz_main FILE` or the libFuzzer binary replays it.
 *
 * This is what `make check` runs; `make fuzz` runs the same target under
 * libFuzzer with ASan and UBSan.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned long files_run;

/* What is running now, for the SIGABRT handler. */
static const char *cur_file;
static const uint8_t *cur_data;
static size_t cur_len;
static unsigned long cur_index;
static unsigned long long cur_seed;

static void say(const char *s)
{
	ssize_t r = write(2, s, strlen(s));
	(void)r;
}

static void on_abort(int sig)
{
	char buf[256];
	if (cur_file) {
		say("fuzz_main: the failing input is the file ");
		say(cur_file);
		say("\n");
	} else if (cur_data) {
		/* snprintf is not async-signal-safe in theory; the process is
		 * dying of an abort() in the target, not inside stdio. */
		snprintf(buf, sizeof(buf), "fuzz-crash-%llu-%lu", cur_seed, cur_index);
		int fd = open(buf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			ssize_t r = write(fd, cur_data, cur_len);
			(void)r;
			close(fd);
			say("fuzz_main: the failing random input was written to ");
			say(buf);
			say("\n");
		}
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fuzz_main: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 4096, n = 0;
	uint8_t *buf = malloc(cap);
	if (!buf) {
		fclose(f);
		return -1;
	}
	for (;;) {
		if (n == cap) {
			uint8_t *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				fclose(f);
				return -1;
			}
			buf = nb;
			cap *= 2;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		if (!got)
			break;
		n += got;
	}
	fclose(f);
	cur_file = path;
	LLVMFuzzerTestOneInput(buf, n);
	cur_file = NULL;
	free(buf);
	files_run++;
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of a directory, in name order (reproducible). */
static int run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "fuzz_main: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				rc = -1;
				break;
			}
			names = nn;
		}
		size_t len = strlen(dir) + strlen(e->d_name) + 2;
		names[n] = malloc(len);
		if (!names[n]) {
			rc = -1;
			break;
		}
		snprintf(names[n], len, "%s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode) && run_file(names[i]) != 0)
			rc = -1;
		free(names[i]);
	}
	free(names);
	return rc;
}

static int run_path(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "fuzz_main: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return S_ISDIR(st.st_mode) ? run_dir(path) : run_file(path);
}

/* splitmix64: the random inputs depend only on the seed. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned long env_ul(const char *name, unsigned long def)
{
	const char *v = getenv(name);
	return v && *v ? strtoul(v, NULL, 0) : def;
}

int main(int argc, char **argv)
{
	unsigned long runs = env_ul("SHEAF_FUZZ_RUNS", 300);
	unsigned long long seed = env_ul("SHEAF_FUZZ_SEED", 0);
	size_t maxlen = 2048;
	int opt;

	while ((opt = getopt(argc, argv, "n:s:l:")) != -1) {
		switch (opt) {
		case 'n': runs = strtoul(optarg, NULL, 0); break;
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'l': maxlen = strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: %s [-n RUNS] [-s SEED] [-l MAXLEN] [FILE|DIR]...\n",
				argv[0]);
			return 2;
		}
	}
	if (!seed)
		seed = (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32);
	if (maxlen < 1)
		maxlen = 1;

	signal(SIGABRT, on_abort);
	int rc = 0;
	if (optind < argc) {
		for (int i = optind; i < argc; i++)
			if (run_path(argv[i]) != 0)
				rc = 1;
	} else {
		const char *src = getenv("SHEAF_SRCDIR");
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus", src && *src ? src : ".");
		if (run_path(dir) != 0)
			rc = 1;
	}

	printf("fuzz_main: %lu corpus inputs; %lu random inputs from seed %llu (-s %llu -n %lu)\n",
	       files_run, runs, seed, seed, runs);
	fflush(stdout);
	uint64_t st = seed;
	uint8_t *buf = malloc(maxlen);
	if (!buf)
		return 1;
	cur_seed = seed;
	cur_data = buf;
	for (unsigned long i = 0; i < runs; i++) {
		size_t len = (size_t)(rng_next(&st) % maxlen) + 1;
		for (size_t j = 0; j < len; j += 8) {
			uint64_t v = rng_next(&st);
			size_t k = len - j < 8 ? len - j : 8;
			memcpy(buf + j, &v, k);
		}
		cur_index = i;
		cur_len = len;
		LLVMFuzzerTestOneInput(buf, len);
	}
	cur_data = NULL;
	free(buf);
	printf("fuzz_main: %s\n", rc ? "FAIL (unreadable input)" : "all inputs passed");
	return rc;
}
