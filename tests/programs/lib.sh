# lib.sh - helpers shared by the tests/programs/*.sh scripts.  Sourced, not run.
#
# The program tests run real, unmodified programs (python3, gcc, git, sort,
# perl, ...) with LD_PRELOAD=libsheaf.so and check two things:
#   1. the program behaves exactly as it does on glibc's malloc (same exit
#      status, same output, same files), so sheaf is a drop-in replacement;
#   2. sheaf really served the allocations: with SHEAF_STATS=1 every process
#      prints "sheaf totals: allocs=N frees=N live=N mapped_bytes=N" at exit,
#      and a large N proves the preload took effect (a silently ignored
#      LD_PRELOAD would otherwise make every comparison pass trivially).
#
# Environment (exported by Makefile.am to every test):
#   SHEAF_LIB       the library to preload (default $SHEAF_BUILDDIR/.libs/libsheaf.so)
#   SHEAF_SRCDIR    top of the source tree
#   SHEAF_BUILDDIR  top of the build tree
# For manual runs:
#   SHEAF_KEEP_TMP=1       keep the temporary directory (also kept on failure)
#   SHEAF_TEST_TIMEOUT=N   seconds allowed per command (default 300)
#
# Usage in a test:
#   . "$(dirname "$0")/lib.sh"
#   sheaf_init mytest                   # locates the library, makes $T, traps
#   compare_run label min cmd args...   # runs twice, compares, checks totals
#   ...
#   sheaf_finish                        # exit 0 if no check failed, else 1
#
# Portable sh with `set -u`; no bashisms so dash can run it too.

set -u

SHEAF_T_FAILURES=0
SHEAF_T_CHECKS=0
SHEAF_T_NAME=${SHEAF_T_NAME:-$(basename "$0" .sh)}
T=

# ------------------------------------------------------------- reporting --
sheaf_log() { printf '%s: %s\n' "$SHEAF_T_NAME" "$*"; }
pass() { SHEAF_T_CHECKS=$((SHEAF_T_CHECKS + 1)); printf 'PASS: %s: %s\n' "$SHEAF_T_NAME" "$*"; }
fail()
{
	SHEAF_T_CHECKS=$((SHEAF_T_CHECKS + 1))
	SHEAF_T_FAILURES=$((SHEAF_T_FAILURES + 1))
	printf 'FAIL: %s: %s\n' "$SHEAF_T_NAME" "$*"
}
skip() { printf 'SKIP: %s: %s\n' "$SHEAF_T_NAME" "$*"; exit 77; }
# Hard error: the rest of the test cannot run.
fatal() { fail "$*"; sheaf_finish; }

# Shows the last lines of a file, indented, to explain a failure.
show_tail()
{
	[ -f "$1" ] || return 0
	printf '  --- last %s lines of %s ---\n' "${2:-20}" "$1"
	tail -n "${2:-20}" "$1" | sed 's/^/  | /'
}

sheaf_finish()
{
	if [ "$SHEAF_T_FAILURES" -ne 0 ]; then
		printf '%s: %d of %d checks FAILED (files kept in %s)\n' "$SHEAF_T_NAME" \
			"$SHEAF_T_FAILURES" "$SHEAF_T_CHECKS" "${T:-?}"
		SHEAF_KEEP_TMP=1
		exit 1
	fi
	printf '%s: all %d checks passed\n' "$SHEAF_T_NAME" "$SHEAF_T_CHECKS"
	exit 0
}

# ------------------------------------------------------------------ setup --
# Finds the library and creates the temporary directory $T.  Skips (77)
# when the library has not been built: the program tests cannot say
# anything without it.
sheaf_init()
{
	SHEAF_T_NAME=$1
	if [ -z "${SHEAF_LIB:-}" ]; then
		if [ -n "${SHEAF_BUILDDIR:-}" ]; then
			SHEAF_LIB=$SHEAF_BUILDDIR/.libs/libsheaf.so
		else
			# Run by hand from the source tree: try the usual build dirs.
			_d=$(cd "$(dirname "$0")/../.." && pwd)
			for _c in "$_d/.libs/libsheaf.so" "$_d/build/.libs/libsheaf.so"; do
				if [ -f "$_c" ]; then SHEAF_LIB=$_c; break; fi
			done
			SHEAF_LIB=${SHEAF_LIB:-$_d/build/.libs/libsheaf.so}
		fi
	fi
	[ -f "$SHEAF_LIB" ] || skip "sheaf library not found at $SHEAF_LIB (not built?)"
	# LD_PRELOAD resolves a relative path against each process's cwd.
	case $SHEAF_LIB in
	/*) ;;
	*) SHEAF_LIB=$(cd "$(dirname "$SHEAF_LIB")" && pwd)/$(basename "$SHEAF_LIB") ;;
	esac
	export SHEAF_LIB

	SHEAF_TEST_TIMEOUT=${SHEAF_TEST_TIMEOUT:-300}
	command -v timeout >/dev/null 2>&1 || fatal "coreutils timeout not found"

	T=$(mktemp -d "${TMPDIR:-/tmp}/sheaf-$SHEAF_T_NAME.XXXXXX") || fatal "mktemp failed"
	trap 'sheaf_cleanup' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	# Whatever the caller had, the reference runs are on glibc's malloc and
	# the sheaf runs preload sheaf alone.
	unset LD_PRELOAD SHEAF_STATS SHEAF_OPTIONS MALLOC_CHECK_ MALLOC_PERTURB_ 2>/dev/null || true
	export LC_ALL=C
	sheaf_log "library: $SHEAF_LIB"
	sheaf_log "temporary directory: $T"
}

sheaf_cleanup()
{
	_rc=$?
	if [ -n "$T" ] && [ -d "$T" ]; then
		_keep=${SHEAF_KEEP_TMP:-0}
		[ "$_rc" -ne 0 ] && [ "$_rc" -ne 77 ] && _keep=1
		if [ "$_keep" = 1 ]; then
			echo "$SHEAF_T_NAME: kept $T" >&2
		else
			chmod -R u+w "$T" 2>/dev/null
			rm -rf "$T"
		fi
	fi
}

# ------------------------------------------------------------- running ----
# with_sheaf cmd...: runs cmd (and everything it spawns) on sheaf, with the
# statistics table printed at exit, under the command timeout.
with_sheaf()
{
	timeout -k 10 "$SHEAF_TEST_TIMEOUT" env LD_PRELOAD="$SHEAF_LIB" SHEAF_STATS=1 "$@"
}
# without_sheaf cmd...: the same on glibc's malloc (the reference).
without_sheaf()
{
	env -u LD_PRELOAD -u SHEAF_STATS timeout -k 10 "$SHEAF_TEST_TIMEOUT" "$@"
}

# Deletes the SHEAF_STATS tables from a captured stderr, so that what is
# left can be compared with a glibc run.  Line by line rather than as a
# range: the processes of a pipeline exit together and their tables may
# interleave.  A table is a "sheaf statistics (pid N)" title, a column
# header, one row per cache (a name and numbers), a "large:" line and the
# "sheaf totals:" line.
strip_stats()
{
	grep -Ev '^sheaf statistics( |$)|^cache +objsize|^[^ ]+( +[0-9]+){6,}$|^large: live=|^sheaf totals: ' "$1"
	return 0
}

# Explains an exit status: 124 = our timeout, >128 = killed by a signal.
describe_rc()
{
	case $1 in
	124) echo "$1 (timed out after ${SHEAF_TEST_TIMEOUT}s)" ;;
	134) echo "$1 (SIGABRT)" ;;
	137) echo "$1 (SIGKILL)" ;;
	139) echo "$1 (SIGSEGV)" ;;
	13[0-9]|1[4-9][0-9]) echo "$1 (signal $(($1 - 128)))" ;;
	*) echo "$1" ;;
	esac
}

# check_no_diag FILE LABEL: no sheaf diagnostic ("sheaf: ... invalid
# pointer / double free / ...") in a captured stderr.  The statistics table
# ("sheaf statistics", "sheaf totals:") does not match "sheaf: ".
check_no_diag()
{
	if grep -F 'sheaf: ' "$1" >/dev/null 2>&1; then
		fail "$2: sheaf printed a diagnostic: $(grep -F 'sheaf: ' "$1" | head -n 3)"
		return 1
	fi
	return 0
}

# check_totals FILE MIN LABEL: FILE (a captured stderr) holds at least one
# well-formed "sheaf totals:" line and the largest allocs count among them is
# at least MIN.  Sets SHEAF_T_ALLOCS (that largest count) and SHEAF_T_PROCS
# (number of processes that printed totals).
check_totals()
{
	_f=$1 _min=$2 _label=$3
	SHEAF_T_ALLOCS=0
	SHEAF_T_PROCS=0
	if ! grep '^sheaf totals: ' "$_f" >/dev/null 2>&1; then
		fail "$_label: no 'sheaf totals:' line on stderr: sheaf did not serve this program (LD_PRELOAD ignored, or SHEAF_STATS broken)"
		show_tail "$_f" 10
		return 1
	fi
	_bad=$(grep '^sheaf totals: ' "$_f" |
		grep -Ev '^sheaf totals: allocs=[0-9]+ frees=[0-9]+ live=[0-9]+ mapped_bytes=[0-9]+$' | head -n 1)
	if [ -n "$_bad" ]; then
		fail "$_label: malformed totals line: $_bad"
		return 1
	fi
	# Interface: live = allocs - frees (0 if frees ran ahead, which an
	# approximate snapshot with threads still running may show).
	_incons=$(grep '^sheaf totals: ' "$_f" | sed 's/[a-z_]*=//g' |
		awk '{ a = $3; f = $4; l = $5; e = (a > f) ? a - f : 0; if (l != e) { print; exit } }')
	if [ -n "$_incons" ]; then
		fail "$_label: totals inconsistent (live != allocs - frees): $_incons"
		return 1
	fi
	SHEAF_T_PROCS=$(grep -c '^sheaf totals: ' "$_f")
	SHEAF_T_ALLOCS=$(grep '^sheaf totals: ' "$_f" | sed 's/^sheaf totals: allocs=\([0-9]*\) .*/\1/' |
		sort -n | tail -n 1)
	if [ "$SHEAF_T_ALLOCS" -lt "$_min" ]; then
		fail "$_label: sheaf served only $SHEAF_T_ALLOCS allocations in its busiest process (expected >= $_min)"
		return 1
	fi
	pass "$_label: sheaf served it ($SHEAF_T_PROCS process(es) printed totals, busiest allocs=$SHEAF_T_ALLOCS)"
	return 0
}

# compare_run LABEL MIN_ALLOCS cmd...: runs cmd on glibc and then on sheaf,
# each from the same current directory with stdin from /dev/null, and
# checks: same exit status, identical stdout, identical stderr once the
# statistics tables are removed (unless COMPARE_STDERR=0), no sheaf
# diagnostic, and at least MIN_ALLOCS allocations served by sheaf in one of
# the processes.  MIN_ALLOCS -1: no totals line is required (for programs
# that close stderr before they exit, where sheaf cannot print one).
# Outputs are kept in $T/LABEL.{ref,sheaf}.{out,err}.
# Returns 0 when everything matched.
compare_run()
{
	_label=$1 _min=$2
	shift 2
	_o=$T/$(printf '%s' "$_label" | tr -c 'A-Za-z0-9_.-' '_')
	without_sheaf "$@" >"$_o.ref.out" 2>"$_o.ref.err" </dev/null
	_rrc=$?
	with_sheaf "$@" >"$_o.sheaf.out" 2>"$_o.sheaf.err" </dev/null
	_src=$?
	_ok=0
	if [ "$_rrc" -ne "$_src" ]; then
		fail "$_label: exit status $(describe_rc $_src) on sheaf, $(describe_rc $_rrc) on glibc"
		show_tail "$_o.sheaf.err" 15
		_ok=1
	fi
	if ! cmp -s "$_o.ref.out" "$_o.sheaf.out"; then
		fail "$_label: stdout differs between glibc and sheaf ($(wc -c <"$_o.ref.out") vs $(wc -c <"$_o.sheaf.out") bytes)"
		diff "$_o.ref.out" "$_o.sheaf.out" 2>&1 | head -n 10 | sed 's/^/  | /'
		_ok=1
	fi
	if [ "${COMPARE_STDERR:-1}" = 1 ]; then
		strip_stats "$_o.sheaf.err" >"$_o.sheaf.err.stripped"
		if ! cmp -s "$_o.ref.err" "$_o.sheaf.err.stripped"; then
			fail "$_label: stderr differs between glibc and sheaf (statistics removed)"
			diff "$_o.ref.err" "$_o.sheaf.err.stripped" 2>&1 | head -n 10 | sed 's/^/  | /'
			_ok=1
		fi
	fi
	check_no_diag "$_o.sheaf.err" "$_label" || _ok=1
	if [ "$_min" -ge 0 ]; then
		check_totals "$_o.sheaf.err" "$_min" "$_label" || _ok=1
	fi
	if [ "$_ok" -eq 0 ]; then
		pass "$_label: same status ($_rrc) and output ($(wc -c <"$_o.ref.out") bytes) as glibc"
	fi
	return $_ok
}

# elapsed: seconds since the test started (for the log only, never asserted).
SHEAF_T_START=$(date +%s)
elapsed() { echo $(($(date +%s) - SHEAF_T_START)); }
