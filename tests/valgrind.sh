#!/usr/bin/env bash
# valgrind.sh - memcheck over the unit tests, and over integration tests
# with sheaf as the program's malloc.
#
# The unit tests link the core without interposing malloc, so memcheck sees
# sheaf's own code and data structures run.  For the integration tests sheaf
# *is* malloc: without --soname-synonyms=somalloc=nouserintercepts memcheck
# would silently replace sheaf's malloc with its own and test nothing of
# sheaf.  Any memcheck error fails the test (--error-exitcode).
set -u
B=${SHEAF_BUILDDIR:?}
command -v valgrind >/dev/null || { echo "SKIP: valgrind not installed"; exit 77; }
VG="valgrind -q --error-exitcode=99 --leak-check=no"
fail=0
run() {
	local name=$1; shift
	local log
	log=$(mktemp)
	if "$@" >"$log" 2>&1; then
		echo "ok   - $name"
	else
		echo "FAIL - $name (exit $?)"
		tail -30 "$log"
		fail=1
	fi
	rm -f "$log"
}
for t in "$B"/tests/unit/test_*; do
	case $t in *.c|*.o|*.log|*.trs) continue ;; esac
	[ -x "$t" ] || continue
	# The unit tests look at sheaves and counters directly: keep the
	# sheaves (valgrind=0); memcheck still checks every access sheaf makes.
	opts=valgrind=0
	# test_node sets its node count by running itself again, which
	# under valgrind would run valgrind: give it here.
	[ "$(basename "$t")" = test_node ] && opts=$opts:nodes=4
	run "memcheck $(basename "$t")" env SHEAF_VALGRIND_QUICK=1 SHEAF_OPTIONS=$opts $VG "$t"
done
for t in test_api test_cache_api test_random_mt; do
	[ -x "$B/tests/integration/$t" ] || continue
	run "memcheck (sheaf is malloc) $t" env SHEAF_VALGRIND_QUICK=1 \
		"$B/libtool" --mode=execute $VG --soname-synonyms=somalloc=nouserintercepts \
		"$B/tests/integration/$t"
done
# memcheck learns about sheaf's blocks through client requests: it must see
# a use after free, a read of an rcu_free()'d object once its grace period
# is over, and a leak - and nothing in a clean run (which also reads an
# rcu_free()'d object *before* the grace period ends: that is allowed).
VC="$B/tests/integration/vg_client"
if [ -x "$VC" ]; then
	VGS="$B/libtool --mode=execute valgrind -q --soname-synonyms=somalloc=nouserintercepts"
	run "memcheck: clean run of vg_client" $VGS --error-exitcode=99 "$VC" clean
	for mode in uaf rcu; do
		out=$($VGS "$VC" $mode 2>&1)
		if echo "$out" | grep -q "Invalid read"; then
			echo "ok   - memcheck reports the $mode read through sheaf"
		else
			echo "FAIL - memcheck did not report the $mode read"; echo "$out" | tail -20; fail=1
		fi
	done
	out=$($VGS --leak-check=full "$VC" leak 2>&1)
	if echo "$out" | grep -q "bytes in 1 blocks are definitely lost"; then
		echo "ok   - memcheck's leak check finds a block leaked through sheaf"
	else
		echo "FAIL - memcheck did not report the leak"; echo "$out" | tail -20; fail=1
	fi
fi
exit $fail
