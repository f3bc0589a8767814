#!/bin/bash
# rcu_compile.sh - the compile-time contract of rcu_free() and the example.
#
# What it proves:
#   1. rcu_free(ptr, field) with a field that is neither a struct rcu_head
#      nor a struct rcu_ptr does not compile, and the compiler says why:
#      "rcu_free(): the field must be a struct rcu_head or a struct rcu_ptr"
#      (an int field, and a pointer-to-rcu_ptr field);
#   2. the same code with a struct rcu_ptr field and with a struct rcu_head
#      field (liburcu's) compiles, with -Wall -Wextra -Werror, as C11 and
#      as gnu11, and links against libsheaf + liburcu-qsbr;
#   3. struct rcu_ptr is one pointer (8 bytes) unless the build is tiny
#      (SHEAF_RCU_TINY in the generated sheaf/features.h), where it is a
#      struct rcu_head; SHEAF_RCU_PTR_SIZE matches sizeof in both cases;
#   4. the example examples/rcu_hash runs for a second and reports
#      "0 canary errors".
# Uses $SHEAF_SRCDIR and $SHEAF_BUILDDIR (exported by make check; guessed
# from the script's location otherwise).  Exit 0 pass, 1 fail, 77 skip.

set -u

name=rcu_compile
here=$(cd "$(dirname "$0")" && pwd)
SRCDIR=${SHEAF_SRCDIR:-$(cd "$here/../.." && pwd)}
if [ -n "${SHEAF_BUILDDIR:-}" ]; then
	BUILDDIR=$SHEAF_BUILDDIR
elif [ -f "$SRCDIR/build/api/sheaf/features.h" ]; then
	BUILDDIR=$SRCDIR/build
else
	BUILDDIR=$SRCDIR
fi

failures=0
checks=0
pass() { checks=$((checks + 1)); echo "PASS: $name: $*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL: $name: $*"; }
skip() { echo "SKIP: $name: $*"; exit 77; }

CC=${CC:-cc}
command -v "$CC" >/dev/null 2>&1 || CC=gcc
command -v "$CC" >/dev/null 2>&1 || skip "no C compiler"
[ -f "$SRCDIR/api/sheaf/rcu.h" ] || skip "sources not found at $SRCDIR"
[ -f "$BUILDDIR/api/sheaf/features.h" ] || skip "no generated sheaf/features.h in $BUILDDIR (not configured?)"

T=$(mktemp -d "${TMPDIR:-/tmp}/sheaf-$name.XXXXXX") || { echo "mktemp failed"; exit 1; }
trap 'rm -rf "$T"' EXIT

# liburcu's headers may live in a multiarch directory.
URCU_CFLAGS=$(pkg-config --cflags liburcu-qsbr 2>/dev/null || true)
URCU_LIBS=$(pkg-config --libs liburcu-qsbr 2>/dev/null || echo -lurcu-qsbr)
INC="-I$SRCDIR/api -I$BUILDDIR/api $URCU_CFLAGS"
LIBDIR=$BUILDDIR/.libs

# snippet FIELD_DECL MAIN_EXTRA: a translation unit that rcu_free()s
# through the member `f`.
snippet()
{
	cat <<EOF
#include <stdlib.h>
#include <sheaf.h>
#include <sheaf/rcu.h>

struct node {
	long key;
	$1;
	long value;
};

int main(void)
{
	struct node *n = malloc(sizeof(*n));
	if (!n)
		return 1;
	n->key = 1;
	rcu_free(n, f);
	$2
	return rcu_free_barrier();
}
EOF
}

MSG='rcu_free(): the field must be a struct rcu_head or a struct rcu_ptr'

# 1. Wrong field types must not compile, with the message.
for decl in 'int f' 'struct rcu_ptr *f' 'void *f'; do
	snippet "$decl" "" >"$T/bad.c"
	if $CC -std=gnu11 $INC -c "$T/bad.c" -o "$T/bad.o" >"$T/bad.log" 2>&1; then
		fail "a field declared '$decl' compiled"
	elif grep -F "$MSG" "$T/bad.log" >/dev/null; then
		pass "field '$decl' rejected: $(grep -F "$MSG" "$T/bad.log" | head -n 1 | sed 's/^[^:]*:[0-9]*:[0-9]*: //')"
	else
		fail "field '$decl' rejected, but without \"$MSG\""
		sed 's/^/  | /' "$T/bad.log" | head -n 15
	fi
done

# 2. The right field types compile cleanly and link.
for decl in 'struct rcu_ptr f' 'struct rcu_head f'; do
	for std in c11 gnu11; do
		snippet "$decl" "" >"$T/good.c"
		if $CC -std=$std -Wall -Wextra -Werror $INC -c "$T/good.c" -o "$T/good.o" >"$T/good.log" 2>&1; then
			pass "field '$decl' compiles (-std=$std -Wall -Wextra -Werror)"
		else
			fail "field '$decl' does not compile with -std=$std -Wall -Wextra -Werror"
			sed 's/^/  | /' "$T/good.log" | head -n 15
		fi
	done
	if [ -f "$LIBDIR/libsheaf.so" ]; then
		if $CC -std=gnu11 "$T/good.o" -o "$T/good" -L"$LIBDIR" -lsheaf $URCU_LIBS -lpthread \
			-Wl,-rpath,"$LIBDIR" >"$T/link.log" 2>&1; then
			if "$T/good" >"$T/run.log" 2>&1; then
				pass "field '$decl': links and runs (rcu_free + rcu_free_barrier)"
			else
				fail "field '$decl': the program failed"
				sed 's/^/  | /' "$T/run.log" | head -n 10
			fi
		else
			fail "field '$decl': does not link against $LIBDIR/libsheaf.so"
			sed 's/^/  | /' "$T/link.log" | head -n 10
		fi
	fi
done

# 3. sizeof(struct rcu_ptr): 8, or a struct rcu_head in a tiny build.
if grep -E '^[[:space:]]*#[[:space:]]*define[[:space:]]+SHEAF_RCU_TINY' "$BUILDDIR/api/sheaf/features.h" >/dev/null; then
	tinybuild=1
else
	tinybuild=0
fi
cat >"$T/size.c" <<'EOF'
#include <stdio.h>
#include <sheaf.h>
#include <sheaf/rcu.h>
int main(void)
{
	printf("%zu %zu %zu\n", sizeof(struct rcu_ptr), sizeof(struct rcu_head),
	       (size_t)SHEAF_RCU_PTR_SIZE);
	return 0;
}
EOF
if $CC -std=gnu11 $INC "$T/size.c" -o "$T/size" >"$T/size.log" 2>&1; then
	read -r ptr_size head_size macro_size <<EOF
$("$T/size")
EOF
	if [ "$tinybuild" = 1 ]; then
		[ "$ptr_size" = "$head_size" ] && pass "tiny build: sizeof(struct rcu_ptr) = sizeof(struct rcu_head) = $ptr_size" ||
			fail "tiny build: sizeof(struct rcu_ptr) is $ptr_size, struct rcu_head $head_size"
	else
		[ "$ptr_size" = 8 ] && pass "sizeof(struct rcu_ptr) == 8" ||
			fail "sizeof(struct rcu_ptr) is $ptr_size, expected 8"
	fi
	[ "$macro_size" = "$ptr_size" ] && pass "SHEAF_RCU_PTR_SIZE == sizeof(struct rcu_ptr)" ||
		fail "SHEAF_RCU_PTR_SIZE is $macro_size, sizeof(struct rcu_ptr) $ptr_size"
else
	fail "the sizeof program does not compile"
	sed 's/^/  | /' "$T/size.log" | head -n 10
fi

# 4. The example.
EX=$BUILDDIR/examples/rcu_hash
if [ -x "$EX" ]; then
	if timeout -k 5 60 "$EX" 1 >"$T/ex.out" 2>"$T/ex.err"; then
		if grep -F ' 0 canary errors' "$T/ex.out" >/dev/null; then
			pass "examples/rcu_hash 1: $(cat "$T/ex.out")"
		else
			fail "examples/rcu_hash 1 did not report 0 canary errors: $(cat "$T/ex.out")"
		fi
	else
		rc=$?
		fail "examples/rcu_hash 1 exited with status $rc: $(cat "$T/ex.out")"
		sed 's/^/  | /' "$T/ex.err" | head -n 10
	fi
else
	fail "examples/rcu_hash not built at $EX"
fi

if [ "$failures" -ne 0 ]; then
	echo "$name: $failures of $checks checks FAILED"
	exit 1
fi
echo "$name: all $checks checks passed"
exit 0
