/*
 * diag.c - diagnostics that never allocate.
 *
 * Reports are written with write(2) from a stack buffer formatted by a small
 * printf subset, because the allocator being reported on may be the one that
 * stdio would call (and may be in an inconsistent state).
 *
 * Supported: %s %.*s %c %d %u %ld %lu %lld %llu %zu %zd %x %lx %p, '-' and
 * a width for %s and numbers.
 */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#endif

struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, char ch)
{
	if (o->len + 1 < o->cap)
		o->buf[o->len] = ch;
	o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, bool left)
{
	int pad = width > (int)n ? width - (int)n : 0;
	if (!left)
		while (pad-- > 0)
			put(o, ' ');
	for (size_t i = 0; i < n; i++)
		put(o, s[i]);
	if (left)
		while (pad-- > 0)
			put(o, ' ');
}

static void put_num(struct out *o, unsigned long long v, bool neg, unsigned int base,
		    const char *prefix, int width, bool left)
{
	char tmp[32];
	size_t n = 0;
	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	char num[40];
	size_t m = 0;
	if (neg)
		num[m++] = '-';
	for (const char *p = prefix; *p; p++)
		num[m++] = *p;
	while (n)
		num[m++] = tmp[--n];
	put_padded(o, num, m, width, left);
}

static int diag_vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
	struct out o = { buf, cap, 0 };
	for (const char *f = fmt; *f; f++) {
		if (*f != '%') {
			put(&o, *f);
			continue;
		}
		f++;
		bool left = false;
		int width = 0, prec = -1;
		if (*f == '-') {
			left = true;
			f++;
		}
		while (*f >= '0' && *f <= '9')
			width = width * 10 + (*f++ - '0');
		if (*f == '.' && f[1] == '*') {
			prec = va_arg(ap, int);
			f += 2;
		}
		int lng = 0;
		bool z = false;
		while (*f == 'l') {
			lng++;
			f++;
		}
		if (*f == 'z') {
			z = true;
			f++;
		}
		unsigned long long u;
		long long s;
		switch (*f) {
		case 's': {
			const char *str = va_arg(ap, const char *);
			if (!str)
				str = "(null)";
			size_t n = strlen(str);
			if (prec >= 0 && (size_t)prec < n)
				n = (size_t)prec;
			put_padded(&o, str, n, width, left);
			break;
		}
		case 'c':
			put(&o, (char)va_arg(ap, int));
			break;
		case 'd':
			s = z ? (long long)va_arg(ap, ssize_t) : lng >= 2 ? va_arg(ap, long long) :
			    lng ? va_arg(ap, long) : va_arg(ap, int);
			put_num(&o, s < 0 ? 0ull - (unsigned long long)s : (unsigned long long)s, s < 0,
				10, "", width, left);
			break;
		case 'u':
		case 'x':
			u = z ? va_arg(ap, size_t) : lng >= 2 ? va_arg(ap, unsigned long long) :
			    lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
			put_num(&o, u, false, *f == 'x' ? 16 : 10, "", width, left);
			break;
		case 'p':
			put_num(&o, (uintptr_t)va_arg(ap, void *), false, 16, "0x", width, left);
			break;
		case '%':
			put(&o, '%');
			break;
		default:
			put(&o, '%');
			if (*f)
				put(&o, *f);
			else
				f--;
		}
	}
	if (cap)
		buf[o.len < cap ? o.len : cap - 1] = '\0';
	return (int)o.len;
}

int diag_snprintf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = diag_vformat(buf, n, fmt, ap);
	va_end(ap);
	return r;
}

static void diag_write(const char *buf, size_t n)
{
	int saved = errno;
	while (n) {
		ssize_t w = write(2, buf, n);
		if (w <= 0) {
			if (w < 0 && errno == EINTR)
				continue;
			break;
		}
		buf += w;
		n -= (size_t)w;
	}
	errno = saved;
}

void diag_printf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = diag_vformat(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	diag_write(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* One frame: "func+0x1c (libfoo.so)" where dladdr() knows a symbol,
 * "(file+offset)" for addr2line otherwise.  dladdr allocates nothing. */
static void diag_frame(const char *indent, int n, void *ip)
{
	Dl_info info;
	bool known = dladdr(ip, &info) != 0;
	if (known && info.dli_sname)
		diag_printf("%s#%d %p %s+0x%lx (%s)\n", indent, n, ip, info.dli_sname,
			    (unsigned long)((uintptr_t)ip - (uintptr_t)info.dli_saddr), info.dli_fname);
	else if (known && info.dli_fname)
		diag_printf("%s#%d %p (%s+0x%lx)\n", indent, n, ip, info.dli_fname,
			    (unsigned long)((uintptr_t)ip - (uintptr_t)info.dli_fbase));
	else
		diag_printf("%s#%d %p\n", indent, n, ip);
}

/* True for an address inside libsheaf itself. */
static bool diag_is_ours(void *ip)
{
	Dl_info self, info;
	return dladdr((void *)diag_frame, &self) && dladdr(ip, &info) &&
	       info.dli_fbase == self.dli_fbase;
}

void diag_frames(const char *indent, void *const *addrs, int depth, int max)
{
	int i = 0, n = 0;
	while (i < depth && diag_is_ours(addrs[i]))
		i++;   /* the call site is the first frame outside sheaf */
	for (; i < depth && n < max; i++)
		diag_frame(indent, n++, addrs[i]);
}

/*
 * The caller's stack after a report.  Frames are walked with libunwind's
 * unw_step() and named with dladdr(): neither allocates through malloc
 * (unw_get_proc_name() would, and a report may come from under an
 * allocator lock).  sheaf's own frames are skipped.
 */
void diag_backtrace(void)
{
#ifdef HAVE_LIBUNWIND
	/* valgrind prints its own stacks, and libunwind's address probes
	 * (write(2) of unmapped bytes) would be reported as errors. */
	if (!sheaf_opt.backtrace || sheaf_under_valgrind)
		return;
	void *addrs[32];
	int depth = unw_backtrace(addrs, 32);
	diag_frames("    ", addrs, depth, 24);
#endif
}

void diag_bad_pointer(const char *func, const void *ptr, const char *fmt, ...)
{
	char buf[512];
	int n = diag_snprintf(buf, sizeof(buf), "sheaf: %s: ", func);
	va_list ap;
	va_start(ap, fmt);
	if (n < (int)sizeof(buf))
		n += diag_vformat(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	diag_write(buf, (size_t)n);
	(void)ptr;
	diag_backtrace();
	if (sheaf_opt.abort_on_error)
		abort();
}

void diag_fatal(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = diag_vformat(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	diag_write(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
	abort();
}

void diag_assert_fail(const char *cond, const char *file, int line)
{
	diag_fatal("sheaf: internal assertion failed: %s (%s:%d)\n", cond, file, line);
}
