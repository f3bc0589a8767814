#!/bin/bash
# compare.sh - run bench_simple under glibc, sheaf and the installed peer
# allocators, side by side, and write a comparison table.
#
#   compare.sh --bin PATH [--lib PATH] [--out DIR] [--quick] [--reps N]
#              [--no-peers] [--only ROW[,ROW...]] [--name LABEL]
#
# The same binary runs under every allocator: glibc with no preload, the
# others through LD_PRELOAD.  Runs are interleaved - for each repetition,
# for each row, every allocator once, starting at a different allocator each
# repetition - so that slow drift of a noisy machine (frequency, neighbours)
# lands on all allocators alike instead of on whichever ran last.  Each run
# is one process running one row (bench_simple --only ROW), so its peak RSS
# is that row's.  Per row and allocator we keep the median ns/op and the
# largest peak RSS over the repetitions.
#
# Output: DIR/latest.md (also printed to stdout) and DIR/latest.json; a
# progress line per run on stderr.  Exit status 1 if any run failed (its
# cell then reads FAIL), 2 on bad usage.

# The Makefile runs this as "$(SHELL) compare.sh", and configure's SHELL may
# be /bin/sh (dash on Debian).  Re-run under bash before any bash syntax is
# parsed (a shell reads a script one command at a time).
if [ -z "${BASH_VERSION:-}" ]; then exec /bin/bash "$0" "$@"; fi
set -euo pipefail

prog=${0##*/}
usage() {
	cat <<EOF
usage: $prog --bin BENCH_SIMPLE [--lib LIBSHEAF_SO] [--out DIR] [options]
  --bin PATH     the bench_simple binary (required)
  --lib PATH     the allocator under test (libsheaf.so), run via LD_PRELOAD
  --name LABEL   its label in the tables (default: sheaf)
  --out DIR      where latest.md and latest.json go (default: benchmarks/results)
  --quick        a tenth of the work per row, 2 repetitions (about a minute)
  --reps N       repetitions (default 5, --quick 2)
  --no-peers     skip jemalloc / tcmalloc / mimalloc
  --only LIST    only these rows (comma-separated, see bench_simple --list)
  --timeout S    kill a run after S seconds and count it as failed (default 120)
EOF
}

die() { echo "$prog: $*" >&2; exit 2; }

bin="" lib="" label="sheaf" out="benchmarks/results" quick=0 reps="" peers=1 only="" run_timeout=120
while [ $# -gt 0 ]; do
	case $1 in
	--bin) bin=${2:?--bin needs a path}; shift ;;
	--lib) lib=${2:?--lib needs a path}; shift ;;
	--name) label=${2:?--name needs a label}; shift ;;
	--out) out=${2:?--out needs a directory}; shift ;;
	--quick) quick=1 ;;
	--reps) reps=${2:?--reps needs a number}; shift ;;
	--no-peers) peers=0 ;;
	--only) only=${2:?--only needs row names}; shift ;;
	--timeout) run_timeout=${2:?--timeout needs seconds}; shift ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument '$1'" ;;
	esac
	shift
done

[ -n "$bin" ] || { usage >&2; die "--bin is required"; }
[ -x "$bin" ] || die "bench binary '$bin' is missing or not executable (build it first)"
if [ -z "$reps" ]; then
	if [ "$quick" = 1 ]; then reps=2; else reps=5; fi
fi
case $reps in '' | *[!0-9]* | 0) die "--reps wants a positive integer" ;; esac
case $run_timeout in '' | *[!0-9]* | 0) die "--timeout wants a positive integer" ;; esac
bench_args=()
[ "$quick" = 1 ] && bench_args+=(--quick)

# ----------------------------------------------------------- allocators --
# names[i] is the label, libs[i] the preloaded object ("" = glibc itself).
names=(glibc) libs=("")

# The loader only warns when a preload cannot be loaded and runs the program
# anyway - on glibc's malloc.  Check that the object really gets mapped.
# (No pipe into grep -q here: pipefail would turn cat's SIGPIPE into a failure.)
preload_works() {
	local so real maps
	so=$1
	real=$(readlink -f -- "$so")
	maps=$(env LD_PRELOAD="$so" cat /proc/self/maps 2>/dev/null) || return 1
	grep -qF -- "$real" <<<"$maps"
}

if [ -n "$lib" ]; then
	[ -f "$lib" ] || die "--lib '$lib' does not exist (build the library first)"
	case $lib in /*) ;; *) lib=$PWD/$lib ;; esac
	preload_works "$lib" || die "LD_PRELOAD=$lib: not mapped, or 'cat /proc/self/maps' failed under it (try: LD_PRELOAD=$lib cat /proc/self/maps)"
	[ "$label" != glibc ] || die "--name glibc is reserved for the system malloc"
	names+=("$label") libs+=("$lib")
fi

if [ "$peers" = 1 ]; then
	libdirs=("/usr/lib/$(uname -m)-linux-gnu" /usr/lib64 /usr/lib /usr/local/lib)
	# label and candidate file names, first found wins
	for spec in "jemalloc libjemalloc.so.2 libjemalloc.so" \
		"tcmalloc libtcmalloc_minimal.so.4 libtcmalloc.so.4" \
		"mimalloc libmimalloc.so.2 libmimalloc.so"; do
		read -r peer files <<<"$spec"
		found=""
		for d in "${libdirs[@]}"; do
			for f in $files; do
				if [ -z "$found" ] && [ -f "$d/$f" ]; then found=$d/$f; fi
			done
		done
		[ -n "$found" ] || continue
		if [ -n "$lib" ] && [ "$peer" = "$label" ]; then
			echo "$prog: note: --name $label is taken by --lib, $found not run again" >&2
			continue
		fi
		if preload_works "$found"; then
			names+=("$peer") libs+=("$found")
		else
			echo "$prog: warning: $found does not preload, $peer skipped" >&2
		fi
	done
fi
nalloc=${#names[@]}

# ----------------------------------------------------------------- rows --
row_list=$("$bin" --list) || die "'$bin --list' failed"
rows=()
while read -r r _; do
	[ -n "$r" ] || continue
	if [ -n "$only" ] && ! [[ ",$only," == *",$r,"* ]]; then continue; fi
	rows+=("$r")
done <<<"$row_list"
[ ${#rows[@]} -gt 0 ] || die "no rows selected (see '$bin --list')"
if [ -n "$only" ]; then
	for r in ${only//,/ }; do
		[[ " ${rows[*]} " == *" $r "* ]] || die "unknown row '$r' (see '$bin --list')"
	done
fi

mkdir -p -- "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sheaf-bench.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
raw=$tmp/raw.tsv	# rep alloc row ops seconds ns_per_op peak_rss_kib | FAIL
: >"$raw"

# ------------------------------------------------------------------ run --
total=$((reps * ${#rows[@]} * nalloc))
n=0 failures=0
start_s=$(date +%s)
date_s=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
load_start=$(awk '{ print $1 }' /proc/loadavg 2>/dev/null) || true
for ((rep = 0; rep < reps; rep++)); do
	for row in "${rows[@]}"; do
		for ((k = 0; k < nalloc; k++)); do
			a=$(((k + rep) % nalloc))	# rotate who goes first
			name=${names[a]} so=${libs[a]}
			n=$((n + 1))
			echo "[$n/$total] $row $name" >&2
			if [ -n "$so" ]; then
				cmd=(env LD_PRELOAD="$so")
			else
				cmd=(env -u LD_PRELOAD)
			fi
			rc=0 rname=""
			line=$(timeout -k 5 "$run_timeout" "${cmd[@]}" "$bin" --only "$row" \
				${bench_args[@]+"${bench_args[@]}"} 2>"$tmp/err") || rc=$?
			[ "$rc" -ne 0 ] || read -r rname ops sec ns rss <<<"$line" || true
			if [ "$rc" -eq 0 ] && [ "$rname" = "$row" ]; then
				printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
					"$rep" "$name" "$row" "$ops" "$sec" "$ns" "$rss" >>"$raw"
			else
				failures=$((failures + 1))
				if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
					why="timed out after $run_timeout s"
				elif [ "$rc" -gt 128 ]; then
					why="killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"
				elif [ "$rc" -ne 0 ]; then
					why="exit status $rc"
				else
					why="unexpected output '$line'"
				fi
				echo "$prog: $row under $name failed: $why; stderr: $(tr '\n' ' ' <"$tmp/err" | cut -c1-300)" >&2
				printf '%s\t%s\t%s\tFAIL\n' "$rep" "$name" "$row" >>"$raw"
			fi
		done
	done
done
elapsed_s=$(($(date +%s) - start_s))
load_end=$(awk '{ print $1 }' /proc/loadavg 2>/dev/null) || true

# -------------------------------------------------------------- machine --
json_str() {	# JSON string literal of $1
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\t'/ }
	printf '"%s"' "$s"
}

pkg_version() {	# "pkg version" owning file $1, or nothing
	local so=$1 pkg ver
	command -v dpkg-query >/dev/null 2>&1 || return 0
	pkg=$(dpkg-query -S "$so" 2>/dev/null | awk -F': ' 'NR == 1 { print $1 }') || true
	if [ -z "$pkg" ]; then
		pkg=$(dpkg-query -S "$(readlink -f -- "$so")" 2>/dev/null | awk -F': ' 'NR == 1 { print $1 }') || true
	fi
	[ -n "$pkg" ] || return 0
	ver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || true
	echo "$pkg $ver"
}

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null) || true
[ -n "$cpu" ] || cpu=$(uname -m)
cores=$(nproc 2>/dev/null || echo '?')
kernel=$(uname -r)
glibc=$(ldd --version 2>/dev/null | awk 'NR == 1') || true
[ -n "$glibc" ] || glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)
if [ "$quick" = 1 ]; then mode=quick; else mode=full; fi

alloc_desc=()
for ((a = 0; a < nalloc; a++)); do
	so=${libs[a]}
	if [ -z "$so" ]; then
		d="system malloc, no preload"
	else
		d=$so
		v=$(pkg_version "$so")
		if [ -n "$v" ]; then
			d="$d (Debian $v)"
		elif [ -f "$so" ]; then
			d="$d (built $(date -u -r "$so" '+%Y-%m-%d %H:%M UTC'))"
		fi
	fi
	alloc_desc+=("$d")
done

# ---------------------------------------------------------------- stats --
# One line per row and allocator, in table order:
#   row alloc runs fails median_ns min_ns max_ns max_rss speed_vs_glibc ns_list
# speed is "-" where either side has no successful run.
order=$tmp/order.tsv
: >"$order"
for row in "${rows[@]}"; do
	for ((a = 0; a < nalloc; a++)); do printf '%s\t%s\n' "$row" "${names[a]}" >>"$order"; done
done
stats=$tmp/stats.tsv
awk -F'\t' -v OFS='\t' '
	FNR == NR {		# raw runs
		key = $3 SUBSEP $2
		if ($4 == "FAIL") { fails[key]++; next }
		cnt = ++runs[key]
		ns[key, cnt] = $6 + 0
		if (!(key in rss) || $7 + 0 > rss[key]) rss[key] = $7 + 0
		next
	}
	{			# table order: row alloc
		key = $1 SUBSEP $2
		m = runs[key] + 0
		med = "-"; lo = "-"; hi = "-"; list = ""
		if (m > 0) {
			for (i = 1; i <= m; i++) v[i] = ns[key, i]
			for (i = 2; i <= m; i++) {	# insertion sort (mawk has no asort)
				x = v[i]
				for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]
				v[j + 1] = x
			}
			med = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
			lo = v[1]; hi = v[m]
			for (i = 1; i <= m; i++) list = list (i > 1 ? "," : "") ns[key, i]
			median[key] = med
		}
		rows[++nr] = $1; allocs[nr] = $2
		line[nr] = $1 OFS $2 OFS m OFS (fails[key] + 0) OFS med OFS lo OFS hi OFS \
			((key in rss) ? rss[key] : "-")
		lists[nr] = list
	}
	END {
		for (i = 1; i <= nr; i++) {
			g = rows[i] SUBSEP "glibc"; k = rows[i] SUBSEP allocs[i]
			sp = "-"
			if ((g in median) && (k in median) && median[k] > 0)
				sp = median[g] / median[k]
			print line[i], sp, (lists[i] == "" ? "-" : lists[i])
		}
	}' "$raw" "$order" >"$stats"

# ---------------------------------------------------------------- latest.md --
md=$out/latest.md.tmp
{
	echo "# bench_simple: malloc comparison"
	echo
	echo "- date: $date_s"
	echo "- machine: $cpu, $cores cores, Linux $kernel"
	echo "- C library: $glibc"
	echo "- load average (1 min) at start / end: ${load_start:-?} / ${load_end:-?} (these runs add 1-2; more is other work sharing the machine)"
	for ((a = 0; a < nalloc; a++)); do echo "- ${names[a]}: ${alloc_desc[a]}"; done
	echo "- mode: $mode; $reps interleaved repetitions per row and allocator, one process per run;" \
		"median ns/op, largest peak RSS; ${elapsed_s} s"
	echo "- binary: $bin"
	if [ "$failures" -gt 0 ]; then echo "- **$failures run(s) failed** (see stderr of the run)"; fi
	echo
	echo "speed vs glibc = glibc ns/op / allocator ns/op (above 1.00x: faster than glibc)." \
		"spread = (max - min) / median of ns/op over the repetitions: a ratio closer to 1.00x" \
		"than the spreads is noise."
	while IFS= read -r row; do
		desc=$(awk -v r="$row" '$1 == r { sub(/^[^ ]+ +/, ""); print; exit }' <<<"$row_list")
		echo
		echo "## $row"
		echo
		echo "$desc"
		echo
		echo "| allocator | ns/op | Mops/s | peak RSS KiB | speed vs glibc | spread |"
		echo "|---|--:|--:|--:|--:|--:|"
		awk -F'\t' -v r="$row" '$1 == r {
			if ($3 == 0) { printf "| %s | FAIL | | | | |\n", $2; next }
			sp = ($9 == "-") ? "-" : sprintf("%.2fx", $9)
			spread = ($5 > 0) ? sprintf("%.0f%%", 100 * ($7 - $6) / $5) : "-"
			if ($4 > 0) spread = spread sprintf(" (%d failed)", $4)
			printf "| %s | %.2f | %.1f | %d | %s | %s |\n", $2, $5, 1000 / $5, $8, sp, spread
		}' "$stats"
	done < <(printf '%s\n' "${rows[@]}")
	echo
	echo "## summary"
	echo
	echo "Geometric mean over the rows of speed vs glibc (rows where both ran)."
	echo
	echo "| allocator | geomean speed vs glibc | rows | faster / slower than glibc |"
	echo "|---|--:|--:|--:|"
	for ((a = 0; a < nalloc; a++)); do
		awk -F'\t' -v al="${names[a]}" '$2 == al && $9 != "-" {
				s += log($9); n++
				if ($9 > 1) f++; else if ($9 < 1) w++
			}
			END {
				if (n) printf "| %s | %.2fx | %d | %d / %d |\n", al, exp(s / n), n, f, w
				else printf "| %s | - | 0 | - |\n", al
			}' "$stats"
	done
} >"$md"
mv -f -- "$md" "$out/latest.md"

# -------------------------------------------------------------- latest.json --
js=$out/latest.json.tmp
{
	echo "{"
	echo "  \"date\": $(json_str "$date_s"),"
	echo "  \"mode\": \"$mode\", \"reps\": $reps, \"elapsed_s\": $elapsed_s, \"failed_runs\": $failures,"
	echo "  \"machine\": {\"cpu\": $(json_str "$cpu"), \"cores\": $(json_str "$cores"),"
	echo "              \"kernel\": $(json_str "$kernel"), \"glibc\": $(json_str "$glibc")},"
	echo "  \"loadavg_start\": $(json_str "${load_start:-}"), \"loadavg_end\": $(json_str "${load_end:-}"),"
	echo "  \"binary\": $(json_str "$bin"),"
	echo "  \"allocators\": ["
	for ((a = 0; a < nalloc; a++)); do
		sep=","; [ $((a + 1)) -eq "$nalloc" ] && sep=""
		echo "    {\"name\": $(json_str "${names[a]}"), \"lib\": $(json_str "${libs[a]}"), \"desc\": $(json_str "${alloc_desc[a]}")}$sep"
	done
	echo "  ],"
	echo "  \"results\": ["
	awk -F'\t' 'function num(x) { return (x == "-") ? "null" : x }
		{ rec[++n] = $0 }
		END {
			for (i = 1; i <= n; i++) {
				split(rec[i], f, "\t")
				printf "    {\"row\": \"%s\", \"allocator\": \"%s\", \"runs\": %d, \"failed\": %d, " \
					"\"median_ns_per_op\": %s, \"min_ns_per_op\": %s, \"max_ns_per_op\": %s, " \
					"\"peak_rss_kib\": %s, \"speed_vs_glibc\": %s, \"ns_per_op_runs\": [%s]}%s\n",
					f[1], f[2], f[3], f[4], num(f[5]), num(f[6]), num(f[7]), num(f[8]),
					(f[9] == "-") ? "null" : sprintf("%.4f", f[9]),
					(f[10] == "-") ? "" : f[10], (i < n) ? "," : ""
			}
		}' "$stats"
	echo "  ],"
	echo "  \"geomean_speed_vs_glibc\": {"
	for ((a = 0; a < nalloc; a++)); do
		sep=","; [ $((a + 1)) -eq "$nalloc" ] && sep=""
		awk -F'\t' -v al="${names[a]}" -v sep="$sep" '$2 == al && $9 != "-" { s += log($9); n++ }
			END { printf "    \"%s\": %s%s\n", al, n ? sprintf("%.4f", exp(s / n)) : "null", sep }' "$stats"
	done
	echo "  }"
	echo "}"
} >"$js"
mv -f -- "$js" "$out/latest.json"

cat "$out/latest.md"
echo "$prog: wrote $out/latest.md and $out/latest.json (${elapsed_s} s)" >&2
[ "$failures" -eq 0 ] || exit 1
