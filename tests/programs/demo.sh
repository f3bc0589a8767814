#!/bin/sh
# demo.sh - the README's demo, kept honest by running it as a test.
#
# What it proves: the one-line demonstration a user tries first,
#   PYTHONMALLOC=malloc SHEAF_STATS=1 LD_PRELOAD=libsheaf.so python3 -c '...'
# works: the program prints the right answer, and at exit sheaf prints its
# statistics table on stderr, ending with the line
#   sheaf totals: allocs=N frees=N live=N mapped_bytes=N
# with a large allocation count (PYTHONMALLOC=malloc sends every Python
# object through malloc; without it pymalloc would serve small objects from
# its own arenas).  The table is shown in the test log, as in the README.

. "$(dirname "$0")/lib.sh"
sheaf_init demo

# Any python3 will do; Debian's own first (what a reader of the README has).
PY=
for cand in /usr/bin/python3 python3; do
	if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'pass' 2>/dev/null; then
		PY=$(command -v "$cand")
		break
	fi
done
[ -n "$PY" ] || skip "python3 not found"
sheaf_log "python: $PY"

# Dict and list heavy: 200,000 strings in 1,000 growing lists in a dict,
# then a Counter and joins.  The answer is known in closed form: 1000 keys
# with 200 values each; the decimal digits of 0..199999 add up to
# 10*1 + 90*2 + 900*3 + 9000*4 + 90000*5 + 100000*6 = 1088890 characters.
SNIPPET='
import collections
d = {}
for i in range(200000):
    d.setdefault(i % 1000, []).append(str(i))
sizes = collections.Counter(len(v) for v in d.values())
chars = sum(len("".join(v)) for v in d.values())
pairs = sorted({(k % 7, len(v)) for k, v in d.items()})
print(len(d), sizes.most_common(1), chars, pairs[:3])
'
EXPECTED='1000 [(200, 1000)] 1088890 [(0, 200), (1, 200), (2, 200)]'

start=$(elapsed)
# timeout runs outside the preload: only python3 is on sheaf.
timeout -k 10 "$SHEAF_TEST_TIMEOUT" env LD_PRELOAD="$SHEAF_LIB" SHEAF_STATS=1 PYTHONMALLOC=malloc \
	"$PY" -c "$SNIPPET" >"$T/out" 2>"$T/err"
rc=$?
sheaf_log "ran in $(($(elapsed) - start)) s"

if [ $rc -ne 0 ]; then
	fail "python3 on sheaf exited with status $(describe_rc $rc)"
	show_tail "$T/err" 15
elif [ "$(cat "$T/out")" != "$EXPECTED" ]; then
	fail "wrong output: '$(cat "$T/out")', expected '$EXPECTED'"
else
	pass "output correct: $EXPECTED"
fi

# The statistics: stderr holds nothing but the table, and the table ends
# with the totals line.
echo "  --- sheaf statistics as printed at exit ---"
sed 's/^/  | /' "$T/err"
last=$(tail -n 1 "$T/err")
lines=$(grep -c . "$T/err")
case $last in
"sheaf totals: "*) pass "the totals line is the last line on stderr" ;;
*) fail "the last line on stderr is not the totals line: '$last'" ;;
esac
if [ "$lines" -ge 4 ]; then
	pass "a table of $((lines - 1)) lines precedes it"
else
	fail "no statistics table before the totals line ($lines lines on stderr)"
fi
if [ "$(grep -c '^sheaf totals: ' "$T/err")" -ne 1 ]; then
	fail "expected exactly one totals line (one process)"
fi
check_no_diag "$T/err" "demo"
# 200,000 strings and 1,000 lists: well over 100,000 mallocs.
check_totals "$T/err" 100000 "python3 demo"
mapped=$(sed -n 's/^sheaf totals: .* mapped_bytes=\([0-9]*\)$/\1/p' "$T/err" | tail -n 1)
if [ "${mapped:-0}" -gt 0 ]; then
	pass "mapped_bytes=$mapped"
else
	fail "mapped_bytes is 0 or missing"
fi

sheaf_finish
