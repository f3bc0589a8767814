#!/usr/bin/env python3
"""scaling.py - throughput of every allocator from 1 to N threads.

    scaling.py --builddir BUILD [--threads 1,2,4,8,16] [--reps 3] [--out DIR]
               [--peer-dir DIR] [--render SCALING_JSON]

Runs bench_malloc's scale_* rows (registered when BENCH_SCALE lists thread
counts) under glibc, sheaf and the peers that bench.py finds, one process
per row, thread count and allocator, interleaved (for each repetition, for
each row, every allocator once, starting at a different one each time), and
writes in --out:

  scaling.md    per row: Mops/s per allocator and thread count (the median
                of the repetitions), the speed-up over the allocator's own
                1-thread figure, and sheaf's ratio to each of the others;
  scaling.json  every run;
  scaling.png   throughput against threads, one panel per row (gnuplot).

The rows run on the wall clock: give them a machine with at least as many
idle cores as the largest thread count (on 2 cores only 1 and 2 mean
anything).  --peer-dir adds a directory searched first for the peers'
shared objects, for machines without their Debian packages (copy
libjemalloc.so.2, libtcmalloc_minimal.so.4 and libmimalloc.so.2 there).
--render draws the tables and the picture again from a saved scaling.json,
for example on a machine with gnuplot after a run on one without.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the driver's allocator discovery, runner and machine facts)

ROWS = {
    "scale_local": "each thread: 64 blocks of 16..1024 B, written, freed in shuffled order (nothing shared)",
    "scale_larson": "larson: threads replace random slots of one shared 8192-slot array (8..1000 B; remote frees)",
    "scale_glibc_thread": "glibc bench-malloc-thread: 1024 private slots per thread, 4..32768 B, inverse square",
    "scale_xthread": "T/2 producer/consumer pairs, 64 B blocks: every free is remote",
}


def parse_threads(s):
    try:
        ts = sorted({int(x) for x in s.split(",") if x})
    except ValueError:
        bench.die("--threads wants comma-separated integers")
    if not ts or ts[0] < 1 or ts[-1] > 128:
        bench.die("--threads: 1..128")
    return ts


def default_threads():
    n, t, out = os.cpu_count() or 2, 1, []
    while t <= n:
        out.append(t)
        t *= 2
    if out[-1] != n:
        out.append(n)
    return out


def row_key(gbench_name):
    """('scale_larson', 8) from 'scale_larson/real_time/threads:8'."""
    base = gbench_name.split("/")[0]
    t = int(gbench_name.rsplit("threads:", 1)[1]) if "threads:" in gbench_name else 1
    return base, t


def main():
    ap = argparse.ArgumentParser(prog="scaling.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--builddir", default=".")
    ap.add_argument("--lib", help="libsheaf.so (default BUILDDIR/.libs/libsheaf.so)")
    ap.add_argument("--name", default="sheaf")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--threads", help="thread counts (default powers of two up to the cores, and the cores)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.2, help="Google Benchmark min time per run, s")
    ap.add_argument("--only", help="regular expression over the row names")
    ap.add_argument("--allocators", help="comma-separated subset of glibc,sheaf,jemalloc,tcmalloc,mimalloc")
    ap.add_argument("--peer-dir", action="append", default=[], help="search here first for the peers' .so")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--also", action="append", metavar="LABEL=PATH", help="one more allocator to preload")
    ap.add_argument("--variant", action="append", metavar="LABEL=VAR=VALUE",
                    help="--lib once more with an environment variable")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--render", metavar="SCALING_JSON")
    args = ap.parse_args()

    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        return render(args, saved["input"], saved["runs"])

    bench.LIBDIRS[:0] = [os.path.abspath(d) for d in args.peer_dir]
    threads = parse_threads(args.threads) if args.threads else default_threads()
    bdir = os.path.abspath(args.builddir)
    args.lib = args.lib or os.path.join(bdir, ".libs", "libsheaf.so")
    prog = os.path.join(bdir, "benchmarks", "bench_malloc")
    if not os.access(prog, os.X_OK):
        bench.die("%s is missing (make benchmarks/bench_malloc)" % prog)
    bench.maybe_install(args)
    allocs = bench.allocators(args)
    os.environ["BENCH_SCALE"] = ",".join(str(t) for t in threads)
    rows = bench.list_rows(prog, args.only)
    rows = [r for r in rows if r.startswith("scale_")]
    if not rows:
        bench.die("no scale_* rows selected")
    total = args.reps * len(rows) * len(allocs)
    info = bench.machine_info(args, os.path.dirname(HERE))
    date = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")
    bench.warn("%d runs: %d rows (threads %s) x %d allocators (%s) x %d repetitions; load average %s"
               % (total, len(rows), os.environ["BENCH_SCALE"], len(allocs), ",".join(a for a, _ in allocs),
                  args.reps, info["loadavg"]))
    R = bench.Runner(args, total)
    R.context = {}
    runs, t0 = [], time.time()
    for rep in range(args.reps):
        for row in rows:
            for k in range(len(allocs)):
                label, so = allocs[(k + rep) % len(allocs)]
                R.progress("rep %d/%d: %s under %s" % (rep + 1, args.reps, bench.display_name(row), label))
                rec = R.gbench(prog, row, label, so, args.min_time)
                rec["rep"] = rep
                runs.append(rec)
    R.done()
    ctx = {"threads": threads, "reps": args.reps, "min_time": args.min_time, "allocs": allocs,
           "rows": rows, "info": info, "date": date, "elapsed": time.time() - t0, "name": args.name,
           "failures": R.failures, "alloc_desc": [bench.describe_allocator(a, so) for a, so in allocs]}
    return render(args, ctx, runs)


def render(args, ctx, runs):
    names = [a for a, _ in ctx["allocs"]]
    threads, info, sheaf = ctx["threads"], ctx["info"], ctx["name"]
    os.makedirs(args.out, exist_ok=True)
    med = {}
    for r in runs:
        if r.get("ok"):
            med.setdefault(row_key(r["gbench_name"]) + (r["allocator"],), []).append(r["ns_per_op"])
    mops = {k: 1e3 / statistics.median(v) for k, v in med.items()}   # ns/op -> Mops/s
    bases = []
    for r in ctx["rows"]:
        b = row_key(r)[0]
        if b not in bases:
            bases.append(b)

    lines = []
    w = lines.append
    w("# sheaf thread scaling")
    w("")
    w("Throughput (million malloc+free pairs per second, all threads together; wall clock) from 1 to %d "
      "threads; the median of %d interleaved repetitions, %g s minimum per run. In brackets: the speed-up "
      "over the same allocator with 1 thread (scale_xthread: over 2 threads)." % (threads[-1], ctx["reps"],
                                                                               ctx["min_time"]))
    w("")
    w("- date: %s; sheaf source %s" % (ctx["date"], info.get("sheaf_source", "?")))
    w("- machine: %s, %s cores, Linux %s; C library %s" % (info["cpu"], info["cores"], info["kernel"],
                                                          info["libc"]))
    for a, d in zip(names, ctx["alloc_desc"]):
        w("- %s: %s" % (a, d))
    w("- runtime %.0f s, %d failed runs" % (ctx["elapsed"], ctx["failures"]))
    w("")
    summary = {}
    for b in bases:
        w("## %s" % b)
        w("")
        w(ROWS.get(b, ""))
        w("")
        w("| threads | " + " | ".join(names) + " | " +
          " | ".join("%s / %s" % (sheaf, a) for a in names if a != sheaf) + " |")
        w("|---:|" + "---:|" * (len(names) + len(names) - 1))
        for t in threads:
            if not any((b, t, a) in mops for a in names):
                continue
            cells = []
            for a in names:
                v = mops.get((b, t, a))
                t1 = min([x for x in threads if (b, x, a) in mops] or [t])
                v1 = mops.get((b, t1, a))
                cells.append("-" if v is None else "%.1f (%.1fx)" % (v, v / v1) if v1 else "%.1f" % v)
            s = mops.get((b, t, sheaf))
            rat = []
            for a in names:
                if a == sheaf:
                    continue
                o = mops.get((b, t, a))
                rat.append("%.2fx" % (s / o) if s and o else "-")
                if s and o:
                    summary.setdefault(a, []).append(s / o)
            w("| %d | %s | %s |" % (t, " | ".join(cells), " | ".join(rat)))
        w("")
    w("## sheaf against each allocator over every row and thread count")
    w("")
    w("| against | geometric mean of sheaf's throughput ratio | sheaf faster in |")
    w("|---|---:|---:|")
    for a in names:
        if a in summary:
            xs = summary[a]
            w("| %s | %.2fx | %d of %d |" % (a, bench.geomean(xs), sum(1 for x in xs if x > 1), len(xs)))
    w("")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "scaling.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump({"input": ctx, "runs": [dict(bench.slim(r), gbench_name=r.get("gbench_name")) for r in runs]},
                  f, indent=1)
    sys.stdout.write(md)
    if not args.no_plot:
        plot(args, bases, names, threads, mops)
    return 1 if ctx["failures"] else 0


def plot(args, bases, names, threads, mops):
    gp = shutil.which("gnuplot")
    if not gp:
        bench.warn("gnuplot not found: no scaling.png (render later with --render)")
        return
    tmp = tempfile.mkdtemp(prefix="sheaf-scaling.")
    try:
        cmds = ["set terminal pngcairo size 1400,1000 font 'sans,10' noenhanced",
                "set output '%s'" % os.path.join(args.out, "scaling.png.tmp"),
                "set multiplot layout 2,2 title 'throughput vs threads (Mops/s, wall clock; higher is better)'",
                "set logscale x 2", "set logscale y 2", "set grid", "set key top left",
                "set xlabel 'threads'", "set ylabel 'Mops/s'",
                "set xrange [%g:%g]" % (threads[0] * 0.9, threads[-1] * 1.1),
                "set linetype 1 lc rgb '#9e9e9e' lw 2 pt 7", "set linetype 2 lc rgb '#2e7d32' lw 3 pt 7",
                "set linetype 3 lc rgb '#1565c0' lw 2 pt 7", "set linetype 4 lc rgb '#ef6c00' lw 2 pt 7",
                "set linetype 5 lc rgb '#6a1b9a' lw 2 pt 7"]
        for b in bases:
            plots = []
            for i, a in enumerate(names):
                dat = os.path.join(tmp, "%s-%s.dat" % (b, a))
                with open(dat, "w") as f:
                    for t in threads:
                        if (b, t, a) in mops:
                            f.write("%d %.4f\n" % (t, mops[(b, t, a)]))
                plots.append("'%s' using 1:2 with linespoints lt %d title '%s'" % (dat, i + 1, a))
            cmds.append("set title '%s'" % b)
            cmds.append("plot " + ", ".join(plots))
        cmds.append("unset multiplot")
        script = os.path.join(tmp, "scaling.gp")
        with open(script, "w") as f:
            f.write("\n".join(cmds) + "\n")
        p = subprocess.run([gp, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        out = os.path.join(args.out, "scaling.png")
        if p.returncode == 0 and os.path.exists(out + ".tmp"):
            os.replace(out + ".tmp", out)
        else:
            bench.warn("gnuplot failed: %s" % p.stderr.strip()[:300])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
