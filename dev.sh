#!/usr/bin/env bash
# dev.sh - the two set-up commands of README.md, and what CI runs.
#
#   ./dev.sh demo    install what is missing, build, run python3 on sheaf (default)
#   ./dev.sh check   build and run the whole test suite; ends "N passed, N failed"
#   ./dev.sh deps    only install the missing Debian packages
#   ./dev.sh build   only bootstrap, configure and build (in ./build)
#
# Environment: BUILD_DIR (default ./build), CONFIGURE_FLAGS, JOBS.
set -euo pipefail
cd "$(dirname "$0")"
SRC=$PWD
BUILD_DIR=${BUILD_DIR:-$SRC/build}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# Needed to build and test; the peers are only compared against.
PKGS_BUILD="build-essential autoconf automake libtool pkg-config liburcu-dev libunwind-dev libbenchmark-dev valgrind"
PKGS_TEST="git python3 gcc clang gawk gnuplot-nox libclang-rt-14-dev llvm-14 cppcheck clang-tidy"
PKGS_PEERS="libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0"

missing_pkgs() {
	local p out=""
	for p in $PKGS_BUILD $PKGS_TEST $PKGS_PEERS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out="$out $p"
	done
	echo "$out"
}

deps() {
	local miss
	miss=$(missing_pkgs)
	if [ -z "$miss" ]; then
		echo "dev.sh: all packages present"
		return 0
	fi
	echo "dev.sh: installing:$miss"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $miss >/dev/null
}

build() {
	if [ ! -x "$SRC/configure" ] || [ "$SRC/configure.ac" -nt "$SRC/configure" ] ||
	   [ "$SRC/Makefile.am" -nt "$SRC/Makefile.in" ]; then
		echo "dev.sh: autogen"
		"$SRC/autogen.sh" >/dev/null 2>&1 || "$SRC/autogen.sh"
	fi
	mkdir -p "$BUILD_DIR"
	cd "$BUILD_DIR"
	if [ ! -f Makefile ]; then
		echo "dev.sh: configure ${CONFIGURE_FLAGS:-}"
		# shellcheck disable=SC2086
		"$SRC/configure" -q ${CONFIGURE_FLAGS:-}
	fi
	echo "dev.sh: make -j$JOBS"
	make -s -j"$JOBS" all >/dev/null
	make -s -j"$JOBS" check TESTS= >/dev/null
	cd "$SRC"
}

demo() {
	local lib="$BUILD_DIR/.libs/libsheaf.so"
	echo
	echo "== python3 (PYTHONMALLOC=malloc) running on sheaf: LD_PRELOAD=$lib"
	PYTHONMALLOC=malloc SHEAF_STATS=1 LD_PRELOAD="$lib" python3 -c '
import json, collections
words = ["w%d" % (i % 5000) for i in range(300000)]
c = collections.Counter(words)
doc = json.dumps({k: [v, str(v)] for k, v in c.items()})
print("python3 counted", len(c), "distinct words; json is", len(doc), "bytes")
'
}

summary() {
	# Totals of the automake harness, as the one closing line CI reads.
	local log="$BUILD_DIR/test-suite.log" pass=0 fail=0 skip=0 xfail=0 err=0 xpass=0
	if [ -f "$log" ]; then
		pass=$(awk '/^# PASS:/ {print $3}' "$log")
		fail=$(awk '/^# FAIL:/ {print $3}' "$log")
		skip=$(awk '/^# SKIP:/ {print $3}' "$log")
		xfail=$(awk '/^# XFAIL:/ {print $3}' "$log")
		err=$(awk '/^# ERROR:/ {print $3}' "$log")
		xpass=$(awk '/^# XPASS:/ {print $3}' "$log")
	fi
	echo "$((pass + xfail)) passed, $((fail + err + xpass)) failed, $skip skipped"
	[ $((fail + err + xpass)) -eq 0 ] && [ $((pass + xfail)) -gt 0 ]
}

check() {
	build
	cd "$BUILD_DIR"
	local rc=0
	make -j"$JOBS" check || rc=$?
	if [ $rc -ne 0 ]; then
		# Show the logs of what failed: CI has nothing else to look at.
		for t in $(awk '/^(FAIL|ERROR|XPASS):/ {print $2}' test-suite.log 2>/dev/null); do
			echo "---- $t.log"
			tail -40 "$t.log" 2>/dev/null || true
		done
	fi
	cd "$SRC"
	summary
}

case "${1:-demo}" in
deps) deps ;;
build) deps; build ;;
demo) deps; build; demo ;;
check) check ;;
*) echo "usage: $0 [demo|check|deps|build]" >&2; exit 2 ;;
esac
