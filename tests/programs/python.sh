#!/bin/sh
# python.sh - a slice of CPython's own regression suite on sheaf.
#
# What it proves: CPython, with PYTHONMALLOC=malloc so that every object
# allocation (not only pymalloc's arenas) goes through malloc/realloc/free,
# runs ~50 modules of its test suite on sheaf with exactly the per-test-case
# outcomes it has on glibc's malloc.  CPython is the hardest everyday
# malloc client: millions of small short-lived objects, heavy realloc
# (lists, strings, dicts resizing), posix_memalign-free but calloc-heavy
# code, C extensions (_decimal, _pickle, _sqlite3, zlib, bz2, lzma, expat,
# _ctypes), threads (test_thread, test_threading_local), fork (test_os-like
# cases inside test_thread) and subprocesses that inherit LD_PRELOAD.
#
# How: `python3 -m test --junit-xml` runs the slice once on glibc and once
# on sheaf; the two JUnit reports are compared test case by test case
# (passed / failed / error / skipped).  Only the top-level regrtest process
# gets SHEAF_STATS=1 (the wrapper unsets it right after start-up: sheaf reads
# its options once at initialisation), because many tests assert that the
# stderr of the Pythons they spawn is empty; its totals line must show a
# very large number of allocations.
#
# The slice was measured at ~35-45 s per run on 2 idle cores; modules that
# are slow (test_asyncio, test_subprocess, test_tarfile) or timing-sensitive
# under load (test_threading, test_queue, test_logging) are left out.
# Needs a python3 whose `test` package has the test modules (pyenv builds
# do; Debian's needs libpython3.X-testsuite); skips (77) otherwise.

. "$(dirname "$0")/lib.sh"
sheaf_init python

# Modules for the slice; those missing in the chosen Python's version are
# dropped (e.g. test_unicode became test_str in 3.12).  test_xml_etree is
# not used: it swaps the C and Python ElementTree modules, after which
# regrtest cannot write its JUnit report.
SLICE="test_json test_re test_dict test_list test_set test_unicode test_str
test_string test_struct test_collections test_itertools test_functools
test_heapq test_bisect test_pickle test_bytes test_deque test_sort test_tuple
test_weakref test_gc test_math test_decimal test_fractions test_statistics
test_ordered_dict test_enum test_dataclasses test_long test_array
test_memoryview test_hashlib test_zlib test_csv test_difflib test_copy
test_sqlite3 test_minidom test_pyexpat test_ast test_typing test_random test_thread
test_threading_local test_builtin test_descr test_exceptions test_codecs
test_datetime test_marshal test_bz2 test_lzma test_email test_generators
test_coroutines"

# ------------------------------------------------------ find a python3 ----
# The real executable (sys.executable), not a pyenv shim, so that the
# interpreter and not a bash wrapper is what we measure.
has_testsuite()
{
	"$1" -c 'import sys, test.libregrtest, test.test_json, test.test_dict
print(sys.executable)' 2>/dev/null
}
PY=
for cand in "${SHEAF_PYTHON:-}" python3 /root/.pyenv/shims/python3 /usr/local/bin/python3 \
	/usr/bin/python3 /root/.pyenv/versions/*/bin/python3; do
	[ -n "$cand" ] || continue
	command -v "$cand" >/dev/null 2>&1 || continue
	exe=$(has_testsuite "$cand") || continue
	[ -x "$exe" ] && { PY=$exe; break; }
done
[ -n "$PY" ] || skip "no python3 with CPython's test suite (install libpython3-testsuite or set SHEAF_PYTHON)"
sheaf_log "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"

MODULES=$("$PY" -c '
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec("test." + m)))' $SLICE) ||
	fatal "cannot list test modules"
set -- $MODULES
[ $# -ge 30 ] || fatal "only $# of the slice modules exist in this Python: $MODULES"
sheaf_log "$# test modules"

# regrtest, started after SHEAF_STATS is removed from the environment that
# the Pythons spawned by the tests inherit (sheaf read it at start-up).
WRAPPER='
import os, runpy, sys
os.environ.pop("SHEAF_STATS", None)
sys.argv[0] = "regrtest"
runpy.run_module("test", run_name="__main__", alter_sys=True)
'
# run_slice NAME RUNNER MODULES...: one regrtest run in $T/NAME, on glibc
# (RUNNER without_sheaf) or sheaf (with_sheaf).  PYTHONHASHSEED is fixed so
# that both runs see the same set and dict iteration orders.
run_slice()
{
	mode=$1 runner=$2
	shift 2
	mkdir -p "$T/$mode"
	(cd "$T/$mode" && export TMPDIR="$T/$mode" PYTHONMALLOC=malloc PYTHONHASHSEED=0 &&
		$runner "$PY" -c "$WRAPPER" --tempdir "$T/$mode/work" \
		--junit-xml "$T/$mode/junit.xml" "$@") >"$T/$mode.out" 2>"$T/$mode.err"
}

start=$(elapsed)
run_slice ref without_sheaf "$@"
ref_rc=$?
sheaf_log "glibc run: exit $ref_rc in $(($(elapsed) - start)) s"
start=$(elapsed)
run_slice sheaf with_sheaf "$@"
sheaf_rc=$?
sheaf_log "sheaf run: exit $(describe_rc $sheaf_rc) in $(($(elapsed) - start)) s"

grep -E '^(Total tests|Result):' "$T/ref.out" | sed 's/^/  glibc: /'
grep -E '^(Total tests|Result):' "$T/sheaf.out" | sed 's/^/  sheaf: /'

if [ "$sheaf_rc" -ne "$ref_rc" ]; then
	fail "regrtest exit status $(describe_rc $sheaf_rc) on sheaf, $ref_rc on glibc"
	show_tail "$T/sheaf.out" 30
	show_tail "$T/sheaf.err" 10
else
	pass "regrtest exit status $ref_rc on both"
fi
[ "$ref_rc" -eq 0 ] || sheaf_log "NOTE: the slice does not pass on glibc either (environment?); comparing outcomes only"

# --------------------------------------------- compare JUnit test cases ----
# Parsed by the same Python, without sheaf.
COMPARE='
import sys, xml.etree.ElementTree as ET
def outcomes(path):
    r = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        kind = "passed"
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                kind = child.tag
        r[tc.get("name")] = kind
    return r
ref, new = outcomes(sys.argv[1]), outcomes(sys.argv[2])
diffs = sorted(n for n in set(ref) | set(new) if ref.get(n) != new.get(n))
for n in diffs[:25]:
    print("  %s: glibc=%s sheaf=%s" % (n, ref.get(n, "absent"), new.get(n, "absent")))
counts = {}
for k in new.values():
    counts[k] = counts.get(k, 0) + 1
print("SUMMARY %d %d %d %s" % (len(ref), len(new), len(diffs),
      " ".join("%s=%d" % kv for kv in sorted(counts.items()))))
sys.exit(1 if diffs or not new else 0)
'
if [ ! -s "$T/ref/junit.xml" ]; then
	fatal "glibc run wrote no JUnit report"
elif [ ! -s "$T/sheaf/junit.xml" ]; then
	fail "sheaf run wrote no JUnit report (regrtest crashed?)"
	show_tail "$T/sheaf.out" 30
	show_tail "$T/sheaf.err" 20
else
	"$PY" -c "$COMPARE" "$T/ref/junit.xml" "$T/sheaf/junit.xml" >"$T/compare.txt" 2>&1
	crc=$?
	summary=$(sed -n 's/^SUMMARY //p' "$T/compare.txt")
	if [ $crc -eq 0 ]; then
		pass "all test cases have the same outcome on sheaf and glibc (glibc/sheaf/differing: $summary)"
	else
		fail "test case outcomes differ between glibc and sheaf (glibc/sheaf/differing: $summary)"
		grep -v '^SUMMARY' "$T/compare.txt" | head -n 30
		show_tail "$T/sheaf.out" 20
	fi
fi

# The only SHEAF_STATS output is the regrtest process's own table (children
# do not inherit SHEAF_STATS).  Tens of thousands of allocations at the
# very least; in practice millions.
check_no_diag "$T/sheaf.err" "regrtest stderr"
check_totals "$T/sheaf.err" 100000 "regrtest on sheaf"

sheaf_finish
