#!/bin/sh
# run.sh - the stress program on sheaf and, for reference, on glibc.
#
# tests/stress/stress is one binary, not linked with sheaf: it runs once
# with LD_PRELOAD=libsheaf.so and once on glibc's malloc, with the same seed
# (the same random choices; the thread interleaving differs).  The test
# passes when both runs verify every block and exit 0, and the sheaf run
# really was served by sheaf (SHEAF_STATS=1 prints a "sheaf totals:" line at
# exit, and sheaf printed no diagnostic).  It prints both summary lines and
# the ratio of their ops/s, for information only: no timing is asserted, the
# machine may be small and shared.
#
# A glibc failure fails the test too: the reference must pass, or the
# stress program itself is wrong.
#
# Environment:
#   STRESS_SECONDS   seconds per run (default 4: `make check`; `make stress`
#                    sets minutes)
#   STRESS_SEED      the seed of both runs (default: from the clock)
#   STRESS_THREADS, STRESS_PRESSURE_MIB, STRESS_NO_RLIMIT
#                    passed on to the program (see tests/stress/stress.c)
#   SHEAF_LIB        the library to preload (default $SHEAF_BUILDDIR/.libs/libsheaf.so)
#   SHEAF_BUILDDIR   top of the build tree (set by `make check`; by hand it
#                    defaults to ./build beside tests/)
# Exit 0 pass, 1 fail, 77 skip (library or program not built).

set -u

name=stress
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
B=${SHEAF_BUILDDIR:-$srcdir/build}
BIN=$B/tests/stress/stress
LIB=${SHEAF_LIB:-$B/.libs/libsheaf.so}
SECS=${STRESS_SECONDS:-4}
SEED=${STRESS_SEED:-$(date +%s)}

[ -x "$BIN" ] || { echo "SKIP: $name: $BIN not built (make check builds it)"; exit 77; }
[ -f "$LIB" ] || { echo "SKIP: $name: sheaf library not found at $LIB (not built?)"; exit 77; }
command -v timeout >/dev/null 2>&1 || { echo "FAIL: $name: coreutils timeout not found"; exit 1; }
# LD_PRELOAD resolves a relative path against each process's cwd.
case $LIB in
/*) ;;
*) LIB=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB") ;;
esac

T=$(mktemp -d "${TMPDIR:-/tmp}/sheaf-stress.XXXXXX") || { echo "FAIL: $name: mktemp"; exit 1; }
keep=0
trap 'if [ "$keep" = 0 ]; then rm -rf "$T"; else echo "$name: output kept in $T"; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Whatever the caller had: the reference runs on glibc, the other on sheaf alone.
unset LD_PRELOAD SHEAF_STATS SHEAF_OPTIONS MALLOC_CHECK_ MALLOC_PERTURB_ 2>/dev/null || true
export LC_ALL=C

# The program ends a hang itself (alarm); this limit is the last resort.
limit=$(awk -v s="$SECS" 'BEGIN { printf "%d", s + 420 }')
fail=0

# run LABEL CMD...: runs the program, shows its output, checks its status.
run()
{
	_label=$1
	shift
	timeout -k 10 "$limit" "$@" >"$T/$_label.out" 2>"$T/$_label.err" </dev/null
	_rc=$?
	sed "s/^/$_label: /" "$T/$_label.out"
	# stderr without sheaf's statistics table (as tests/programs/lib.sh strips it)
	grep -Ev '^sheaf statistics( |$)|^cache +objsize|^[^ ]+( +[0-9]+){6,}$|^large: live=|^sheaf totals: ' \
		"$T/$_label.err" | head -n 20 | sed "s/^/$_label: /"
	if [ "$_rc" -ne 0 ]; then
		case $_rc in
		124) why="timed out after ${limit}s" ;;
		13[0-9]|1[4-9][0-9]) why="killed by signal $((_rc - 128))" ;;
		*) why="exit status $_rc" ;;
		esac
		echo "FAIL: $name: $_label run: $why"
		fail=1
		keep=1
		return 1
	fi
	if ! grep '^stress: ok ' "$T/$_label.out" >/dev/null; then
		echo "FAIL: $name: $_label run printed no summary line"
		fail=1
		keep=1
		return 1
	fi
	return 0
}

# field LABEL KEY: a key=value from a run's summary line.
field()
{
	sed -n "s/^stress: ok .*[ ]$2=\([0-9.]*\).*/\1/p" "$T/$1.out"
}

echo "$name: ${SECS}s per run, seed $SEED, library $LIB"
if run sheaf env LD_PRELOAD="$LIB" SHEAF_STATS=1 "$BIN" -s "$SECS" -S "$SEED"; then
	# Proof that sheaf served it: its totals line, with at least half the
	# program's operations as allocations (the rest are frees and reallocs).
	ops=$(field sheaf ops)
	allocs=$(sed -n 's/^sheaf totals: allocs=\([0-9]*\) .*/\1/p' "$T/sheaf.err" | sort -n | tail -n 1)
	if [ -z "$allocs" ]; then
		echo "FAIL: $name: no 'sheaf totals:' line: sheaf did not serve the program (LD_PRELOAD ignored?)"
		fail=1
	elif [ "$allocs" -lt $((ops / 4)) ]; then
		echo "FAIL: $name: sheaf counted $allocs allocations for $ops operations"
		fail=1
	fi
	if grep -F 'sheaf: ' "$T/sheaf.err" >/dev/null; then
		echo "FAIL: $name: sheaf printed a diagnostic: $(grep -F 'sheaf: ' "$T/sheaf.err" | head -n 3)"
		fail=1
	fi
fi
run glibc env "$BIN" -s "$SECS" -S "$SEED"

s=$(field sheaf ops_per_s)
g=$(field glibc ops_per_s)
if [ -n "$s" ] && [ -n "$g" ]; then
	awk -v n="$name" -v s="$s" -v g="$g" -v sr="$(field sheaf peak_rss_kib)" \
		-v gr="$(field glibc peak_rss_kib)" 'BEGIN {
		printf "%s: ops/s sheaf %.0f, glibc %.0f: sheaf/glibc = %.2fx (information only); ",
			n, s, g, (g > 0 ? s / g : 0)
		printf "peak RSS sheaf %.0f MiB, glibc %.0f MiB\n", sr / 1024, gr / 1024
	}'
fi
if [ "$fail" -ne 0 ]; then
	echo "FAIL: $name (seed $SEED: STRESS_SEED=$SEED repeats the random choices)"
	exit 1
fi
echo "PASS: $name"
exit 0
