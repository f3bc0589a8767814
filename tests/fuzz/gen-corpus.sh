#!/usr/bin/env bash
# gen-corpus.sh - writes the seed corpus of fuzz_alloc into tests/fuzz/corpus.
#
#   tests/fuzz/gen-corpus.sh [DIR]
#
# Each seed is a small hand-written program in fuzz_alloc.c's input format
# (see the table above op_of[] there): one operation byte, then its
# argument bytes.  The seeds give the fuzzer a start in every area - all
# size classes and the small/large boundary, every aligned allocator, realloc
# across classes, caches with constructors and bulk operations, rcu_free()
# with fields at several offsets and barriers, impossible sizes, injected
# mmap failures, cross-thread frees - instead of having to discover the
# operation encoding byte by byte.  The output is committed; run this again
# after changing the input format.
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)/corpus}
mkdir -p "$dir"

out=""   # the program being built, as \xHH escapes
b() { local v; for v in "$@"; do out+=$(printf '\\x%02x' $((v & 255))); done; }
# SIZE (two bytes), see get_size(): exact for n < 1024, multiples of 4 below
# 64 KiB, 32 KiB + multiples of 128 up to 1 MiB.
size() {
	local n=$1
	if ((n < 1024)); then b $(((n >> 8) << 2)) $((n & 255))
	elif ((n < 65536 && n % 4 == 0)); then b $((2 | ((n / 4) >> 8) << 2)) $(((n / 4) & 255))
	elif ((n >= 32768 && (n - 32768) % 128 == 0 && (n - 32768) / 128 < 8192)); then
		local k=$(((n - 32768) / 128)); b $((3 | (k >> 8) << 2)) $((k & 255))
	else echo "gen-corpus.sh: size $n cannot be encoded" >&2; exit 1
	fi
}
edge() { b $((3 | 32 << 2)) "$1"; }   # get_size()'s edges[i]

# operations (first index in op_of[])
alloc()   { b 0 "$1" "$2"; size "$3"; b "${4:-0}" "${5:-0}"; }   # slot fn size [align] [freefn]
alloc_edge() { b 0 "$1" "$2"; edge "$3"; b "${4:-0}" 0; }
free_()   { b 6 "$1" "${2:-0}"; }                                 # slot fn
realloc_() { b 10 "$1" "${2:-0}"; size "$3"; }                    # slot fn size
calloc_() { b 13 "$1" "$2" 0; }                                   # cache slot
cfree()   { b 16 "$1"; }
rcu()     { b 18 "$1" "$2" "${3:-0}"; }                           # slot fn offset
usable()  { b 20 "$1"; }
create()  { b 21 "$1" "$2" "$3" "$4"; }                           # cache sizeb alignb flags
bulk()    { b 22 "$1" "$2" "$3"; }                                # cache n first
fbulk()   { b 23 "$1" "$2" "$3"; }
destroy() { b 24 "$1"; }
qs()      { b 25 0; }
barrier() { b 25 6; }
cbarrier() { b 25 7 "$1"; }
trim()    { b 26; }
imposs()  { b 27 "$1" "${2:-0}"; }
fault()   { b 28 "$1"; }
thread()  { b 29 $(($1 - 1)); }                                   # the next N operations
verify()  { b 30; }
nolock()  { b 31 "$1" "$2"; size "${3:-0}"; }                     # fn slot [size]

emit() { printf '%b' "$out" >"$dir/$1"; out=""; }

# 1. every size class and the edges, alive together, then freed each way
for i in $(seq 0 31); do alloc_edge $((i % 64)) 0 "$i"; done
verify
for i in $(seq 0 31); do free_ "$i" $((i % 4)); done
for n in 8 24 48 100 200 300 700 1000; do alloc $((n % 64)) 0 "$n"; done
for n in 1200 3000 5000 9000 16384 24000 32764; do alloc $((n % 64)) 0 "$n"; done
verify; trim; verify
emit 01-sizes

# 2. calloc / aligned allocators at many alignments
for a in 0 3 4 6 9 12 13 14 17 20 21; do alloc $((a + 1)) 2 100 "$a"; done        # aligned_alloc
for a in 0 1 3 6 9 12 16 18; do alloc $((a + 20)) 3 5000 "$a"; done                # posix_memalign
for a in 130 151 200 3 10 13; do alloc $((a % 30 + 30)) 4 40 "$a"; done            # memalign
alloc 60 5 1 0; alloc 61 6 0 0; alloc 62 6 4100 0; alloc 63 1 3000 5; alloc 59 9 700 0
alloc 58 8 900 3; alloc 57 7 33 0
verify
for i in $(seq 0 63); do free_ "$i" 2; done
emit 02-aligned

# 3. realloc up and down across classes and the small/large boundary
alloc 5 0 16
for n in 40 200 1000 4000 16384 32764 33024 65536 200064 1048448 40000 32764 600 24 8; do
	realloc_ 5 0 "$n"
done
alloc 6 0 900; realloc_ 6 1 50000; realloc_ 6 3 64; realloc_ 6 0 0
alloc 7 3 100096 14; realloc_ 7 0 300160; realloc_ 7 0 1000
verify
emit 03-realloc

# 4. caches: create (constructor, hwcache, no sheaves), bulk, destroy
create 0 $((5 << 2 | 1)) 3 4       # 144 B, align 8, constructor
create 1 $((0 << 2 | 0)) 128 1     # 1 B, align 0, hwcache
create 2 $((9 << 2 | 2)) 12 2      # 5200 B, align 4096, no sheaves
create 3 $((31 << 2 | 3)) 0 0      # 128 KiB - 8
bulk 0 40 0; bulk 1 10 40; calloc_ 2 50; calloc_ 2 51; calloc_ 3 52; calloc_ 3 53
verify
fbulk 0 40 0; destroy 1; fbulk 1 10 40; destroy 1; cfree 50; cfree 51; cfree 52
destroy 2; destroy 3; cfree 53; destroy 3
bulk 0 20 0; fbulk 0 10 0; bulk 0 10 30; verify; fbulk 0 48 0; destroy 0
emit 04-caches

# 5. rcu_free: malloc blocks of all kinds, cache objects, every field form
create 0 $((3 << 2 | 1)) 4 4       # 96 B, constructor
create 1 $((20 << 2 | 0)) 128 2    # 21 B, no sheaves
for i in $(seq 0 9); do alloc "$i" 0 $((i * 90 + 8)); done
alloc 10 0 33024; alloc 11 3 40000 9; alloc 12 0 200064
bulk 0 10 20; calloc_ 1 30; calloc_ 1 31
for i in $(seq 0 12); do rcu "$i" $((i % 5)) $((i * 37)); done
for i in $(seq 20 29); do rcu "$i" $((i % 5)) 7; done
rcu 30 0; rcu 31 3 200
alloc 40 0 100; alloc 41 0 100; verify; qs; alloc 42 0 100
cbarrier 0; barrier; destroy 0; destroy 1
emit 05-rcu

# 6. impossible requests, each kind
for v in $(seq 0 13); do imposs "$v" 0; imposs "$v" 77; done
alloc 3 0 100; imposs 4 3; imposs 5 3; realloc_ 3 0 500
emit 06-impossible

# 7. injected mmap failures: large and aligned allocations, realloc, caches
alloc 1 0 33024; fault 3
alloc 2 0 65536; alloc 3 0 200064; alloc 4 3 70016 16; realloc_ 1 0 1048448
create 0 $((31 << 2 | 3)) 0 0; calloc_ 0 5; bulk 0 8 10
fault 1; alloc_edge 6 0 23; alloc 7 2 100 18; verify
fault 0; alloc 8 0 200064; verify
emit 07-faults

# 8. threads: blocks cross threads both ways, rcu_free and destroy inside
create 0 $((10 << 2 | 0)) 4 0      # 11 B
for i in $(seq 0 7); do alloc "$i" 0 $((i * 100 + 10)); done
bulk 0 8 10
thread 10
for i in 0 1 2 3 10 11; do free_ "$i" 0; done
alloc 20 0 300; calloc_ 0 21; rcu 4 0; alloc 22 0 33024
for i in 5 6 7 20 22; do free_ "$i" 1; done
cfree 21; fbulk 0 48 0; verify
thread 3
destroy 0; create 0 $((2 << 2 | 1)) 6 5; bulk 0 30 0
fbulk 0 48 0; barrier; destroy 0
emit 08-threads

# 9. a long mixed program: everything, slots reused many times
for r in $(seq 0 5); do
	for i in $(seq 0 15); do alloc $(((i * 7 + r) % 64)) $(((i + r) % 10)) $(((i * 211 + r * 97) % 1000 + 1)) $((i + r)) $((i + r)); done
	create $((r % 4)) $((r * 37 + 5)) $((r * 3)) $((r % 8))
	bulk $((r % 4)) 12 $((r * 10))
	for i in $(seq 0 7); do rcu $(((i * 9 + r) % 64)) $((i % 5)) $((i * 13)); done
	for i in $(seq 0 15); do realloc_ $(((i * 5 + r) % 64)) "$i" $(((i * 1013 + r) % 900 + 9)); done
	fbulk $((r % 4)) 48 0
	[ $((r % 2)) -eq 0 ] && qs
	trim
	destroy $(((r + 1) % 4))
done
verify
emit 09-mixed

# 10. the signal-safe entry points from ordinary code, mixed with the rest
create 0 $((2 << 2 | 1)) 3 4       # 72 B, constructor
for i in $(seq 0 7); do alloc "$i" 0 $((i * 40 + 8)); done   # sheaves get objects
for i in $(seq 0 7); do free_ "$i" 0; done
for i in $(seq 10 25); do nolock 0 "$i" $(((i - 10) * 24 + 16)); done
bulk 0 8 30
nolock 1 10; nolock 1 11; nolock 1 30; nolock 2 12 1; nolock 2 13 0; nolock 2 31 0
alloc 40 0 100; verify; barrier
for i in $(seq 14 25); do nolock $((i % 2 + 1)) "$i" 1; done
fbulk 0 48 0; barrier; destroy 0
emit 10-nolock

ls -l "$dir"
