#!/usr/bin/env bash
# tests/sanitize/run.sh - sheaf's tests under AddressSanitizer + UBSan and ThreadSanitizer.
#
#   tests/sanitize/run.sh [OUTDIR]        (make check-sanitize runs it;
#                                          default OUTDIR /tmp/sheaf-sanitize)
#
# Builds into OUTDIR and runs, printing PASS / FAIL / SKIP for each:
#   asan  the unit tests (tests/unit/*.c: they link the core and call its
#         layers directly, no malloc interposition), the integration tests
#         (tests/integration/*.c) and the fault-injection test
#         (tests/fault/test_fault.c) under -fsanitize=address,undefined
#         -fno-sanitize-recover=all, with the core compiled the same way, so
#         that ASan checks every memory access sheaf itself makes (outside
#         its own blocks: ASan does not know sheaf's mappings as heap blocks)
#         and UBSan every shift, overflow, misaligned access and bad
#         conversion in the allocator;
#   tsan  the concurrency tests - test_random_mt, test_thread_churn,
#         test_rcu_safety and the unit test_sheaf - under -fsanitize=thread.
#
# A sanitizer wants its runtime first and intercepts malloc itself
# (DESIGN.md, "Known traps"), so sheaf is not the interposed malloc here: the
# integration tests are compiled with -include tests/sanitize/sheaf_names.h,
# which renames the malloc family in the test's code to the sheaf_* names,
# and linked with the core.  TSan builds also get tests/sanitize/tsan_urcu.h
# and tsan_urcu.c, which show TSan liburcu's publication and grace-period
# ordering, and tsan_mremap.c, which does sheaf's mremap() with the mmap and
# munmap that TSan follows (see there).
#
# Environment:
#   SAN_CC         compiler (default clang, else gcc)
#   SAN_STAGES     which stages (default "asan tsan")
#   SAN_TESTS      only tests whose name matches this extended regex
#   SAN_TIMEOUT    seconds per test (default 300)
#   SAN_JOBS       parallel compiles (default: number of CPUs)
#   SHEAF_SRCDIR   source tree (default: the one this script is in)
#   SHEAF_BUILDDIR a configured build tree, for config.h and
#                  api/sheaf/features.h (default $SHEAF_SRCDIR/build)
#   CORE_SOURCES   the core's sources (default: libsheaf_core_la_SOURCES from
#                  Makefile.am; make passes its own list)
# Logs: OUTDIR/logs/STAGE-NAME.log.  Exit status 0 when nothing failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SRC=${SHEAF_SRCDIR:-$(cd "$here/../.." && pwd)}
BLD=${SHEAF_BUILDDIR:-$SRC/build}
OUT=${1:-/tmp/sheaf-sanitize}
JOBS=${SAN_JOBS:-$(nproc 2>/dev/null || echo 2)}
TIMEOUT=${SAN_TIMEOUT:-300}
STAGES=${SAN_STAGES:-asan tsan}
FILTER=${SAN_TESTS:-.}
mkdir -p "$OUT/logs" "$OUT/src"
# The compiler: SAN_CC, else the first of clang and gcc that can link a
# program with ASan + UBSan and with TSan (Debian 12: clang needs
# libclang-rt-14-dev for its sanitizer runtimes, gcc libasan8 libubsan1
# libtsan2, which build-essential brings).
probe="$OUT/src/probe.c"
echo 'int main(void) { return 0; }' >"$probe"
can_sanitize() {
	"$1" -fsanitize=address,undefined "$probe" -o "$OUT/src/probe" >/dev/null 2>&1 &&
		"$1" -fsanitize=thread "$probe" -o "$OUT/src/probe" >/dev/null 2>&1
}
if [ -z "${SAN_CC:-}" ]; then
	for c in clang gcc; do
		if command -v "$c" >/dev/null 2>&1 && can_sanitize "$c"; then SAN_CC=$c; break; fi
	done
	if [ -z "${SAN_CC:-}" ]; then
		echo "sanitize: SKIP: neither clang nor gcc can link ASan/UBSan/TSan programs"
		echo "          (Debian 12: apt-get install libclang-rt-14-dev)"
		exit 77
	fi
fi
CC=$SAN_CC

# ------------------------------------------------- what runs, what not, why
# Not run here at all:
#   tests/programs/*.sh   real programs (python, gcc, git...) under
#                         LD_PRELOAD=libsheaf.so: they exist to test the
#                         interposed malloc, which a sanitizer build cannot have;
#   tests/valgrind.sh     memcheck, a different tool (make check-valgrind).
# Changed before they run under the sheaf_* names (see derive_* below):
#   test_api.c            its dlsym()/dladdr() symbol checks and the glibc
#                         extras that only preload.c implements are left out;
#   test_bad_input.c      expects the diagnostics to name sheaf_free() and
#                         sheaf_realloc(), the functions it now calls.
# Run as they are under ASan although they fork: test_fork and test_rcu_fork
# (sheaf's atfork handlers are in the core, thread.c, so the renamed program
# exercises them exactly as the interposed one does).
declare -A SKIP_ASAN=(
	# Runs under valgrind from tests/valgrind.sh only: its "uaf" and "leak"
	# modes misbehave on purpose for memcheck to catch; not a test by itself.
	[vg_client]="valgrind client program, not a test (tests/valgrind.sh runs it)"
)
# TSan runs the tests whose point is concurrency.  Not under TSan:
# test_fork / test_rcu_fork (TSan does not support a child of a
# multi-threaded fork that starts threads, which is what they do),
# test_signal_storm (its point is async-signal safety, which TSan cannot
# judge: it defers signals to its own safe points and reports every
# non-AS-safe call in a handler), and the single-threaded rest.
TSAN_INTEGRATION="test_random_mt test_thread_churn test_rcu_safety"
TSAN_UNIT="test_sheaf test_node"

# -------------------------------------------------------------- the core
if [ -z "${CORE_SOURCES:-}" ]; then
	CORE_SOURCES=$(awk '/^libsheaf_core_la_SOURCES[ \t]*[+]?=/ { on = 1 }
		on { line = $0; sub(/^libsheaf_core_la_SOURCES[ \t]*[+]?=/, "", line);
		     cont = sub(/\\[ \t]*$/, "", line); print line; if (!cont) on = 0 }' "$SRC/Makefile.am")
fi
core_c=()
for s in $CORE_SOURCES; do
	case $s in *.c) core_c+=("$s") ;; esac
done
[ ${#core_c[@]} -gt 0 ] || { echo "sanitize: no core sources found" >&2; exit 1; }
[ -f "$BLD/config.h" ] || { echo "sanitize: $BLD/config.h missing: configure first (SHEAF_BUILDDIR)" >&2; exit 1; }

INC=(-I"$BLD" -I"$BLD/api" -I"$SRC/api" -I"$SRC/lib" -I"$SRC/tests" -D_GNU_SOURCE)
BASE=(-std=gnu11 -g -O1 -fno-omit-frame-pointer -fno-builtin-malloc -fno-builtin-free
	-fno-builtin-calloc -fno-builtin-realloc -ftls-model=initial-exec)
LIBS=$(pkg-config --libs liburcu-qsbr libunwind 2>/dev/null || echo "-lurcu-qsbr -lurcu-common -lunwind")
LIBS="$LIBS -lpthread -lrt -ldl -lm"

declare -A SANFLAGS=(
	[asan]="-fsanitize=address,undefined -fno-sanitize-recover=all"
	[tsan]="-fsanitize=thread"
)
TSAN_WRAP="-Wl,--wrap=urcu_qsbr_quiescent_state,--wrap=urcu_qsbr_thread_offline,--wrap=urcu_qsbr_unregister_thread,--wrap=urcu_qsbr_synchronize_rcu,--wrap=mremap"

# Runtime options.  detect_leaks=0: sheaf's blocks are mappings that
# LeakSanitizer neither tracks nor scans for pointers, so the only leaks it
# could report are libc's, or false ones (an ASan-heap pointer kept in a
# sheaf block); sheaf's own leaks are what the tests' statistics checks and
# valgrind (make check-valgrind) are for.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allow_user_segv_handler=1:handle_abort=0:quarantine_size_mb=16}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
TSAN_SUPP="$SRC/tests/sanitize/tsan.supp"
tsan_opts="halt_on_error=0:second_deadlock_stack=1:history_size=7"
[ -f "$TSAN_SUPP" ] && tsan_opts="$tsan_opts:suppressions=$TSAN_SUPP"
export TSAN_OPTIONS=${TSAN_OPTIONS:-$tsan_opts}
export SHEAF_SRCDIR="$SRC" SHEAF_BUILDDIR="$BLD"
unset SHEAF_LIB SHEAF_OPTIONS SHEAF_STATS LD_PRELOAD

npass=0 nfail=0 nskip=0
failed=()

result() {   # STATUS LABEL [DETAIL]
	printf '%-5s %-36s %s\n' "$1" "$2" "${3:-}"
	case $1 in
	PASS) npass=$((npass + 1)) ;;
	SKIP) nskip=$((nskip + 1)) ;;
	*) nfail=$((nfail + 1)); failed+=("$2") ;;
	esac
}

# Compiles the core for a stage into OUTDIR/STAGE/core-CC (changed files only).
build_core() {
	local stage=$1 dir="$OUT/$1/core-$(basename "$CC")" pids=() o s flags
	# shellcheck disable=SC2206
	flags=("${BASE[@]}" ${SANFLAGS[$stage]})
	mkdir -p "$dir"
	local newest
	newest=$(ls -t "$SRC"/lib/*.h "$SRC"/api/*.h "$SRC"/api/sheaf/*.h "$BLD/config.h" "$0" 2>/dev/null | head -1)
	core_objs=()
	for s in "${core_c[@]}"; do
		o="$dir/$(echo "$s" | tr / _).o"
		core_objs+=("$o")
		if [ ! -f "$o" ] || [ "$SRC/$s" -nt "$o" ] || [ "$newest" -nt "$o" ]; then
			"$CC" "${flags[@]}" "${INC[@]}" -c "$SRC/$s" -o "$o" 2>>"$OUT/logs/$stage-core.log" &
			pids+=($!)
			if [ ${#pids[@]} -ge "$JOBS" ]; then
				wait "${pids[0]}" || return 1
				pids=("${pids[@]:1}")
			fi
		fi
	done
	for p in "${pids[@]}"; do wait "$p" || return 1; done
	if [ "$stage" = tsan ]; then
		for s in tsan_urcu tsan_mremap; do
			"$CC" "${flags[@]}" -c "$SRC/tests/sanitize/$s.c" -o "$dir/$s.o" \
				2>>"$OUT/logs/$stage-core.log" || return 1
			core_objs+=("$dir/$s.o")
		done
	fi
	return 0
}

# Builds one test program: STAGE NAME SOURCE [extra flags...]
build_test() {
	local stage=$1 name=$2 src=$3 flags
	shift 3
	# shellcheck disable=SC2206
	flags=("${BASE[@]}" ${SANFLAGS[$stage]} "$@")
	local wrap=""
	[ "$stage" = tsan ] && wrap=$TSAN_WRAP
	# shellcheck disable=SC2086
	"$CC" "${flags[@]}" "${INC[@]}" "$src" "${core_objs[@]}" $wrap $LIBS \
		-o "$OUT/$stage/$name" >"$OUT/logs/$stage-$name.build.log" 2>&1
}

# Runs one built test: STAGE NAME LABEL [VAR=value...]
run_test() {
	local stage=$1 name=$2 label=$3 log="$OUT/logs/$1-$2.log" start rc
	shift 3
	start=$(date +%s)
	(cd "$OUT/$stage" && env "$@" timeout -k 10 "$TIMEOUT" "./$name") >"$log" 2>&1
	rc=$?
	local t=$(($(date +%s) - start))
	case $rc in
	0) result PASS "$label" "(${t} s)" ;;
	77) result SKIP "$label" "$(grep -m1 '^SKIP' "$log")" ;;
	124 | 137) result FAIL "$label" "(timed out after $TIMEOUT s; $log)"; tail -20 "$log" | sed 's/^/      /' ;;
	*)
		result FAIL "$label" "(exit $rc, ${t} s; $log)"
		grep -E -m3 -A12 'ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error|CHECK failed|REQUIRE failed' "$log" |
			head -40 | sed 's/^/      /'
		tail -5 "$log" | sed 's/^/      /'
		;;
	esac
}

# Build and run: STAGE KIND NAME SOURCE [flags...] -- [VAR=value...]
build_and_run() {
	local stage=$1 kind=$2 name=$3 src=$4
	shift 4
	local flags=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	local label="$stage $kind/$name"
	[[ "$kind/$name" =~ $FILTER ]] || return 0
	if ! build_test "$stage" "$name" "$src" "${flags[@]}"; then
		result FAIL "$label" "(does not build: $OUT/logs/$stage-$name.build.log)"
		grep -m5 -E 'error' "$OUT/logs/$stage-$name.build.log" | sed 's/^/      /'
		return
	fi
	run_test "$stage" "$name" "$label" "$@"
}

# test_api.c under the sheaf_* names, with the parts that need sheaf to be
# the interposed malloc (the glibc names resolving into libsheaf.so, and
# the glibc extras that only preload/preload.c implements) left out:
#   test_symbols()     dlsym()/dladdr() checks that every glibc name binds to
#                      libsheaf.so; replaced by marking the renamed names as
#                      callable (sheaf_sanitize_mark_callable() in
#                      sheaf_names.h), so that the rest of test_api runs each
#                      of them through its sheaf_* function;
#   test_mallinfo()    mallinfo/mallinfo2 are preload.c's (the sanitizer's
#   test_stats_info()  interceptors would answer), malloc_stats and
#                      malloc_info likewise;
#   mallopt() in test_trim_mallopt(): preload.c's too (ASan's interceptor
#                      returns 0); the call is replaced by its expected 1,
#                      the malloc_trim part of that test runs as written.
# If test_api.c changes so that a pattern no longer matches, the test FAILs
# with a message to update this list, rather than running something else.
derive_test_api() {
	local in="$SRC/tests/integration/test_api.c" out="$OUT/src/test_api.c" pat missing=""
	local -a lines=($'\ttest_symbols();' $'\ttest_mallinfo();' $'\ttest_stats_info();'
		$'\t\tint rc = mallopt(opts[i].param, opts[i].value);')
	for pat in "${lines[@]}"; do
		grep -q -x -F -- "$pat" "$in" || missing="$missing '${pat//$'\t'/}'"
	done
	if [ -n "$missing" ]; then
		echo "sanitize: tests/integration/test_api.c no longer matches:$missing" >&2
		echo "          (update derive_test_api in tests/sanitize/run.sh)" >&2
		return 1
	fi
	sed -E \
		-e 's/^\ttest_symbols\(\);$/\tsheaf_sanitize_mark_callable(exported_names, sym_ok, sizeof(sym_ok) \/ sizeof(sym_ok[0]));  \/* sanitize: no dlsym checks *\//' \
		-e 's/^\ttest_mallinfo\(\);$/\t\/* sanitize: test_mallinfo() left out (preload.c) *\//' \
		-e 's/^\ttest_stats_info\(\);$/\t\/* sanitize: test_stats_info() left out (preload.c) *\//' \
		-e 's/int rc = mallopt\(opts\[i\]\.param, opts\[i\]\.value\);/int rc = 1; (void)opts[i]; \/* sanitize: mallopt() is preload.c'"'"'s *\//' \
		"$in" | sed '1i #line 1 "tests/integration/test_api.c (tests/sanitize/run.sh)"' >"$out"
}

# test_bad_input.c under the sheaf_* names: its bad frees now go through
# sheaf_free() / sheaf_realloc(), and sheaf's one-line diagnostics name the
# function that was called, so the expected texts "sheaf: free(): ..." and
# "sheaf: realloc(): ..." become "sheaf: sheaf_free(): ..." and
# "sheaf: sheaf_realloc(): ...".  Nothing else changes.
derive_test_bad_input() {
	local in="$SRC/tests/integration/test_bad_input.c" out="$OUT/src/test_bad_input.c"
	if ! grep -q '"sheaf: free(): ' "$in" || ! grep -q '"sheaf: realloc(): ' "$in"; then
		echo "sanitize: tests/integration/test_bad_input.c has no \"sheaf: free(): \" /" \
			"\"sheaf: realloc(): \" texts any more (update tests/sanitize/run.sh)" >&2
		return 1
	fi
	sed -e 's/"sheaf: free(): /"sheaf: sheaf_free(): /g' \
	    -e 's/"sheaf: realloc(): /"sheaf: sheaf_realloc(): /g' "$in" |
		sed '1i #line 1 "tests/integration/test_bad_input.c (tests/sanitize/run.sh)"' >"$out"
}

stage_asan() {
	echo "== asan: AddressSanitizer + UndefinedBehaviorSanitizer ($CC)"
	mkdir -p "$OUT/asan"
	if ! build_core asan; then
		result FAIL "asan core" "(does not build: $OUT/logs/asan-core.log)"
		return
	fi
	local f name
	for f in "$SRC"/tests/unit/test_*.c; do
		[ -f "$f" ] || continue
		name=$(basename "$f" .c)
		build_and_run asan unit "$name" "$f"
	done
	for f in "$SRC"/tests/integration/*.c; do
		[ -f "$f" ] || continue
		name=$(basename "$f" .c)
		if [ -n "${SKIP_ASAN[$name]:-}" ]; then
			[[ "integration/$name" =~ $FILTER ]] && result SKIP "asan integration/$name" "${SKIP_ASAN[$name]}"
			continue
		fi
		if [ "$name" = test_api ] || [ "$name" = test_bad_input ]; then
			[[ "integration/$name" =~ $FILTER ]] || continue
			if ! "derive_$name"; then
				result FAIL "asan integration/$name" "(tests/sanitize/run.sh's changes to it are out of date)"
				continue
			fi
			f="$OUT/src/$name.c"
		fi
		build_and_run asan integration "$name" "$f" -include "$SRC/tests/sanitize/sheaf_names.h"
	done
	# Fault injection (links the core like the unit tests; its RLIMIT_AS
	# cases skip themselves under ASan).
	for f in "$SRC"/tests/fault/test_*.c; do
		[ -f "$f" ] || continue
		build_and_run asan fault "$(basename "$f" .c)" "$f"
	done
}

stage_tsan() {
	echo "== tsan: ThreadSanitizer ($CC)"
	mkdir -p "$OUT/tsan"
	if ! build_core tsan; then
		result FAIL "tsan core" "(does not build: $OUT/logs/tsan-core.log)"
		return
	fi
	local name
	for name in $TSAN_UNIT; do
		[ -f "$SRC/tests/unit/$name.c" ] || continue
		build_and_run tsan unit "$name" "$SRC/tests/unit/$name.c"
	done
	for name in $TSAN_INTEGRATION; do
		[ -f "$SRC/tests/integration/$name.c" ] || continue
		# Less work than the default: TSan slows each access 5-15 times;
		# the interleavings, not the count, are what it checks.
		build_and_run tsan integration "$name" "$SRC/tests/integration/$name.c" \
			-include "$SRC/tests/sanitize/sheaf_names.h" -include "$SRC/tests/sanitize/tsan_urcu.h" \
			-- SHEAF_TEST_OPS=1000000 SHEAF_RCU_SECONDS=3
	done
}

start_all=$(date +%s)
for stage in $STAGES; do
	case $stage in
	asan) stage_asan ;;
	tsan) stage_tsan ;;
	*) echo "sanitize: unknown stage $stage" >&2; exit 2 ;;
	esac
done
echo "== sanitize: $npass passed, $nfail failed, $nskip skipped ($(($(date +%s) - start_all)) s; logs in $OUT/logs)"
for f in "${failed[@]}"; do echo "   FAILED: $f"; done
[ "$nfail" -eq 0 ]
