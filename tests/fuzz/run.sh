#!/usr/bin/env bash
# tests/fuzz/run.sh - builds fuzz_alloc with libFuzzer + ASan + UBSan and runs it.
#
#   tests/fuzz/run.sh [OUTDIR]          (make fuzz runs it; default OUTDIR /tmp/sheaf-fuzz)
#
# Environment:
#   FUZZ_SECONDS   how long to fuzz (default 60)
#   FUZZ_CC        the compiler (default clang; libFuzzer needs clang)
#   FUZZ_JOBS      parallel compiles (default: number of CPUs)
#   FUZZ_FLAGS     extra libFuzzer flags (e.g. -jobs=2, -dict=..., -seed=1)
#   FUZZ_CFLAGS    extra flags for the target (e.g. -DFUZZ_AVOID_<NAME>,
#                  see "Known bugs" in fuzz_alloc.c)
#   SHEAF_SRCDIR   source tree (default: the one this script is in)
#   SHEAF_BUILDDIR a configured build tree, for config.h and
#                  api/sheaf/features.h (default: $SHEAF_SRCDIR/build)
#   CORE_SOURCES   the core's sources (default: libsheaf_core_la_SOURCES
#                  read from Makefile.am; make passes its own list)
#
# The core is compiled here with -fsanitize=address,undefined (so that ASan
# and UBSan check sheaf's own memory accesses and arithmetic; ASan does not
# know sheaf's blocks as heap blocks, which is expected: sheaf maps its own
# memory) and -fsanitize=fuzzer-no-link (so that coverage of the allocator
# guides the fuzzer), then linked statically with the target.  The
# working corpus is OUTDIR/corpus, seeded from tests/fuzz/corpus (never
# written to); a crash leaves OUTDIR/crash-* and the command to replay it.
# At the end the corpus is replayed once with -print_coverage=1 to report
# how much of lib/ was reached.
#
# Exit status: 0 when the run ended without a finding, 1 on a crash, a
# model failure or a sanitizer report, 77 when clang or libFuzzer is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SRC=${SHEAF_SRCDIR:-$(cd "$here/../.." && pwd)}
BLD=${SHEAF_BUILDDIR:-$SRC/build}
OUT=${1:-/tmp/sheaf-fuzz}
SECONDS_WANTED=${FUZZ_SECONDS:-60}
CC=${FUZZ_CC:-clang}
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

if [ -z "${CORE_SOURCES:-}" ]; then
	# libsheaf_core_la_SOURCES = \ ... (backslash continued)
	CORE_SOURCES=$(awk '/^libsheaf_core_la_SOURCES[ \t]*[+]?=/ { on = 1 }
		on { line = $0; sub(/^libsheaf_core_la_SOURCES[ \t]*[+]?=/, "", line);
		     cont = sub(/\\[ \t]*$/, "", line); print line; if (!cont) on = 0 }' "$SRC/Makefile.am")
fi
core_c=()
for s in $CORE_SOURCES; do
	case $s in *.c) core_c+=("$s") ;; esac
done
[ ${#core_c[@]} -gt 0 ] || { echo "fuzz: no core sources found" >&2; exit 1; }
[ -f "$BLD/config.h" ] || { echo "fuzz: $BLD/config.h missing: configure first (SHEAF_BUILDDIR)" >&2; exit 1; }

mkdir -p "$OUT/obj" "$OUT/corpus"
probe="$OUT/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return d && n ? 0 : 0; }' >"$probe"
if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe" -o "$OUT/probe" >/dev/null 2>&1; then
	echo "fuzz: SKIP: $CC cannot build a libFuzzer target with ASan/UBSan"
	echo "      (Debian 12: apt-get install clang libclang-rt-14-dev)"
	exit 77
fi

INC=(-I"$BLD" -I"$BLD/api" -I"$SRC/api" -I"$SRC/lib" -I"$SRC/tests" -D_GNU_SOURCE)
COMMON=(-std=gnu11 -g -O1 -fno-omit-frame-pointer -fno-builtin-malloc -fno-builtin-free
	-fno-builtin-calloc -fno-builtin-realloc -ftls-model=initial-exec
	-fno-sanitize-recover=undefined)
CORE_FLAGS=("${COMMON[@]}" -fsanitize=address,undefined,fuzzer-no-link)
TARGET_FLAGS=("${COMMON[@]}" -fsanitize=fuzzer,address,undefined ${FUZZ_CFLAGS:-})
LIBS=$(pkg-config --libs liburcu-qsbr libunwind 2>/dev/null || echo "-lurcu-qsbr -lurcu-common -lunwind")

echo "== fuzz: building into $OUT ($CC, ${#core_c[@]} core sources)"
# Recompile a core object when its source, a header or this script changed.
newest_hdr=$(ls -t "$SRC"/lib/*.h "$SRC"/api/*.h "$SRC"/api/sheaf/*.h "$BLD/config.h" "$0" 2>/dev/null | head -1)
objs=()
pids=()
for s in "${core_c[@]}"; do
	o="$OUT/obj/$(echo "$s" | tr / _).o"
	objs+=("$o")
	if [ ! -f "$o" ] || [ "$SRC/$s" -nt "$o" ] || [ "$newest_hdr" -nt "$o" ]; then
		"$CC" "${CORE_FLAGS[@]}" "${INC[@]}" -c "$SRC/$s" -o "$o" &
		pids+=($!)
		if [ ${#pids[@]} -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
	fi
done
for p in "${pids[@]}"; do wait "$p"; done
"$CC" "${TARGET_FLAGS[@]}" "${INC[@]}" "$SRC/tests/fuzz/fuzz_alloc.c" "${objs[@]}" $LIBS -lpthread \
	-o "$OUT/fuzz_alloc"

echo "== fuzz: $SECONDS_WANTED s, corpus $OUT/corpus + seeds $SRC/tests/fuzz/corpus"
log="$OUT/fuzz.log"
rc=0
# shellcheck disable=SC2086
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:quarantine_size_mb=64} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
	"$OUT/fuzz_alloc" -max_total_time="$SECONDS_WANTED" -print_final_stats=1 -max_len=4096 \
	-artifact_prefix="$OUT/" ${FUZZ_FLAGS:-} "$OUT/corpus" "$SRC/tests/fuzz/corpus" >"$log" 2>&1 || rc=$?

grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | tail -2 || true
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
if [ "$rc" -ne 0 ]; then
	echo "== fuzz: FAILED (exit $rc); the end of $log:"
	grep -v -E '^#[0-9]+ ' "$log" | tail -40
	for a in "$OUT"/crash-* "$OUT"/timeout-* "$OUT"/oom-* "$OUT"/leak-*; do
		[ -f "$a" ] || continue
		echo "== replay: $OUT/fuzz_alloc $a   (or SHEAF_FUZZ_TRACE=1 for a trace of each operation)"
	done
	exit 1
fi

# Coverage: source-based (llvm-cov) over lib/, from a replay of the final
# corpus by an uninstrumented-for-sanitizers build with fuzz_main.c.
PROFDATA=$(command -v llvm-profdata || command -v llvm-profdata-14 || true)
LLVMCOV=$(command -v llvm-cov || command -v llvm-cov-14 || true)
if [ -n "$PROFDATA" ] && [ -n "$LLVMCOV" ]; then
	COVF=(-std=gnu11 -g -O1 -fprofile-instr-generate -fcoverage-mapping -fno-builtin-malloc
	      -ftls-model=initial-exec ${FUZZ_CFLAGS:-})
	core_src=()
	for s in "${core_c[@]}"; do core_src+=("$SRC/$s"); done
	"$CC" "${COVF[@]}" "${INC[@]}" "$SRC/tests/fuzz/fuzz_alloc.c" "$SRC/tests/fuzz/fuzz_main.c" \
		"${core_src[@]}" $LIBS -lpthread -o "$OUT/fuzz_cov"
	rm -f "$OUT"/cov-*.profraw
	LLVM_PROFILE_FILE="$OUT/cov-%p.profraw" "$OUT/fuzz_cov" -n 0 "$OUT/corpus" "$SRC/tests/fuzz/corpus" \
		>"$OUT/coverage-run.log" 2>&1 || { echo "== fuzz: coverage replay failed:"; tail "$OUT/coverage-run.log"; exit 1; }
	"$PROFDATA" merge -sparse "$OUT"/cov-*.profraw -o "$OUT/cov.profdata"
	"$LLVMCOV" report "$OUT/fuzz_cov" -instr-profile="$OUT/cov.profdata" "${core_src[@]}" \
		>"$OUT/coverage.txt" 2>/dev/null || true
	echo "== fuzz: source coverage of the core by the corpus ($OUT/coverage.txt; per line:"
	echo "   $LLVMCOV show $OUT/fuzz_cov -instr-profile=$OUT/cov.profdata <file>)"
	awk 'NR == 1 || /^-+$/ { next } { sub(/.*\/lib\//, "lib/", $1); print "   " $0 }' "$OUT/coverage.txt" |
		sed -E 's/ +/ /g' | awk '{ printf "   %-16s regions %6s  functions %6s  lines %6s\n", $1, $4, $7, $10 }'
else
	echo "== fuzz: (llvm-cov / llvm-profdata not found: no source coverage report)"
fi
echo "== fuzz: PASS (corpus: $(ls "$OUT/corpus" | wc -l) inputs in $OUT/corpus)"
