#!/bin/sh
# git.sh - a small but complete git history built with git running on sheaf.
#
# What it proves: git (and the helpers it spawns: pack-objects, index-pack,
# repack, prune, reflog, fsck, ...) works on sheaf and computes exactly the
# same object ids as on glibc's malloc.  Commit and tag hashes cover every
# byte of every tree and blob, so one differing bit anywhere in the history
# would show.  git is a good client: many small strings and strbufs grown
# by realloc, hash maps of objects, zlib streams, mmap'd packs next to
# malloc'd buffers, and a multi-threaded delta search in pack-objects.
#
# How: the same script (init, ~600 generated files, several commits, a
# branch, a merge, a cherry-pick, an annotated tag, log, blame, diff,
# archive, gc, fsck) runs once on glibc and once on sheaf in the same
# directory, with fixed author/committer names and dates and no user or
# system configuration; the outputs (which contain the hashes) must be
# identical, and sheaf's totals must show it served the allocations.

. "$(dirname "$0")/lib.sh"
sheaf_init git

command -v git >/dev/null 2>&1 || skip "git not found"
sheaf_log "$(git --version)"

cat >"$T/script.sh" <<'EOF'
set -eu
T=$1
export HOME="$T/home" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="Ada Sheaf" GIT_AUTHOR_EMAIL="ada@sheaf.invalid"
export GIT_COMMITTER_NAME="Barn Keeper" GIT_COMMITTER_EMAIL="barn@sheaf.invalid"
export TZ=UTC LC_ALL=C GIT_PAGER=cat PAGER=cat
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_CONFIG_PARAMETERS GIT_CONFIG_COUNT EMAIL 2>/dev/null || true
rm -rf "$T/home" "$T/repo"
mkdir -p "$T/home"

tick=1700000000
commit() {
	tick=$((tick + 3600))
	GIT_AUTHOR_DATE="@$tick +0000" GIT_COMMITTER_DATE="@$tick +0000" \
		git commit -q "$@"
}

# Files whose content depends on (file, generation): deterministic text.
gen() {
	awk -v f="$1" -v g="$2" -v n="$3" 'BEGIN {
		s = f * 7919 + g * 104729
		for (i = 0; i < n; i++) {
			s = (s * 1103515245 + 12345) % 2147483648
			printf "line %d of file %d gen %d: %x %s\n", i, f, g, s, (s % 3 ? "alpha" : "beta gamma")
		}
	}'
}

git init -q -b main "$T/repo"
cd "$T/repo"
git config core.autocrlf false
git config gc.auto 0            # gc only when we say so
git config pack.threads 2

mkdir -p src doc data
i=0
while [ $i -lt 600 ]; do
	case $((i % 3)) in
	0) gen $i 0 40 >src/file$i.c ;;
	1) gen $i 0 25 >doc/file$i.txt ;;
	2) gen $i 0 60 >data/file$i.dat ;;
	esac
	i=$((i + 1))
done
git add -A
commit -m "initial import of 600 files"

# Several commits touching a spread of files.
g=1
while [ $g -le 5 ]; do
	i=$g
	while [ $i -lt 600 ]; do
		for d in src doc data; do
			for f in $d/file$i.*; do
				[ -f "$f" ] && gen $i $g 30 >>"$f"
			done
		done
		i=$((i + 5))
	done
	gen 1000 $g 10 >"doc/changes-$g.txt"
	git add -A
	commit -m "generation $g: append to every 5th file"
	g=$((g + 1))
done

git rm -q "data/file2.dat"
git mv "src/file0.c" "src/main.c"
commit -m "remove one file, rename another"

# A feature branch with its own work.
git checkout -q -b feature
gen 2000 1 80 >src/feature.c
git add src/feature.c
commit -m "feature: new file"
gen 3 9 10 >>doc/file1.txt
git add -A
commit -m "feature: extend doc/file1.txt"

git checkout -q main
gen 4 9 10 >>data/file5.dat
git add -A
commit -m "main: extend data/file5.dat"

# Merge (no fast-forward, so a real merge commit with two parents).
tick=$((tick + 3600))
GIT_AUTHOR_DATE="@$tick +0000" GIT_COMMITTER_DATE="@$tick +0000" \
	git merge -q --no-ff -m "merge feature" feature

# Cherry-pick onto a side branch, then an annotated tag.
git checkout -q -b side main~3
tick=$((tick + 3600))
GIT_AUTHOR_DATE="@$tick +0000" GIT_COMMITTER_DATE="@$tick +0000" \
	git cherry-pick feature >/dev/null
git checkout -q main
tick=$((tick + 3600))
GIT_COMMITTER_DATE="@$tick +0000" git tag -a v1.0 -m "release 1.0"

echo "== log"
git log --oneline --graph --all --decorate
echo "== refs"
git rev-parse HEAD main feature side v1.0 'v1.0^{commit}' 'HEAD^{tree}'
git for-each-ref --format='%(objectname) %(objecttype) %(refname)'
echo "== show"
git show --stat --format=fuller HEAD
git cat-file -p v1.0
echo "== diff"
git diff --stat main~6 main
git diff main~2 main -- doc/file1.txt | head -n 40
git log --format='%H %P' --reverse
echo "== blame"
git blame -s doc/file1.txt | tail -n 15
echo "== tree"
git ls-tree -r HEAD | head -n 20
git ls-tree -r HEAD | wc -l
echo "== archive"
git archive --format=tar HEAD | cksum
git archive --format=tar.gz --prefix=x/ HEAD | gzip -dc | cksum
echo "== grep"
git grep -c "beta gamma" HEAD -- src | head -n 10
echo "== gc"
git reflog expire --expire=now --all
git gc -q --prune=now
git count-objects -v | grep -E '^(count|in-pack|packs|prune-packable|garbage):'
git rev-list --objects --all | wc -l
echo "== fsck"
git fsck --full --strict --no-dangling
echo "== verify"
# (verify-pack's delta chain statistics are not compared: the threaded
# delta search may pick different bases from run to run.)
git verify-pack .git/objects/pack/*.idx
git log --format='%H' | wc -l
git status --porcelain
echo "== done"
EOF

start=$(elapsed)
COMPARE_STDERR=1 compare_run "git history" 5000 sh "$T/script.sh" "$T"
sheaf_log "both runs: $(($(elapsed) - start)) s"

# The outputs compared above hold the hashes; show the head for the log,
# and make sure the script really got to the end on both.
if grep -q '^== done$' "$T/git_history.sheaf.out" && grep -q '^== done$' "$T/git_history.ref.out"; then
	pass "script completed on both ($(sed -n '/^== refs$/{n;p;}' "$T/git_history.sheaf.out") is HEAD)"
else
	fail "script did not complete"
	show_tail "$T/git_history.sheaf.err" 15
fi

sheaf_finish
