#!/usr/bin/env python3
"""bench.py - run sheaf's benchmark programs under every allocator and compare.

    bench.py --builddir BUILD [--lib LIBSHEAF.so] [--out DIR] [--quick] [options]

Programs (in BUILD/benchmarks):
  bench_malloc  malloc-family rows, not linked with libsheaf: run as it is
                (glibc) and under LD_PRELOAD for sheaf, jemalloc, tcmalloc
                and mimalloc (those whose Debian packages are installed;
                run as root, the script installs missing ones with apt-get
                unless --no-install)
  bench_sheaf   sheaf-only rows (slab cache API, rcu_free against call_rcu /
                defer_rcu, cache destroy), linked with libsheaf: sheaf only
  rcuscale      the port of the kernel's kfree_rcu scale test: sheaf only

Every run is one process running one row (Google Benchmark's
--benchmark_filter), so the row's peak RSS is its own and no row inherits
another's state (glibc's single-thread fast paths, for one).  Runs are
interleaved: for each repetition, for each row, every allocator once,
starting at a different allocator each repetition, so that slow drift of
a noisy machine (frequency, neighbours) lands on all allocators alike.
Per row and allocator the median ns/op over the repetitions is reported,
with the spread and the largest peak RSS.  Single-threaded bench_malloc
and cache rows run pinned to one CPU (--pin): on a VM one virtual CPU can
run at half the speed of another for minutes (a busy host sibling), and
a process that lands on it at random made the median of a row bimodal;
every allocator of a row's round runs on the same CPU, the one that
measured fastest at the last check (every 10 s: a 20 ms malloc/free loop
on each CPU of the affinity mask).  A row whose spread under some
allocator exceeds --noisy (25%) after the repetitions gets --extra-reps
(4) more interleaved repetitions, under every allocator alike, so that the
median of a noisy row rests on more runs.

Output in --out: latest.md (tables, also summarised on stdout), latest.json
(every run's figures), latest.png (speed vs glibc per group, geometric
means) and latest-<group>.png (one bar per row and allocator), drawn by
gnuplot with plot.gp.  A progress line per run goes to stderr.  Exit status
1 if any run failed (its cell reads FAIL), 2 on bad usage.

Only the Python 3 standard library is used.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROG = "bench.py"

# label, Debian package, file names (first found wins)
PEERS = [
    ("jemalloc", "libjemalloc2", ["libjemalloc.so.2", "libjemalloc.so"]),
    ("tcmalloc", "libtcmalloc-minimal4", ["libtcmalloc_minimal.so.4", "libtcmalloc.so.4"]),
    ("mimalloc", "libmimalloc2.0", ["libmimalloc.so.2", "libmimalloc.so"]),
]
LIBDIRS = ["/usr/lib/%s-linux-gnu" % platform.machine(), "/usr/lib64", "/usr/lib", "/usr/local/lib"]
# label -> extra environment of that allocator's runs (--variant)
ALLOC_ENV = {}

# Families: the part of a row's name before the first "/" (two parts for
# rcu/...).  group: the summary bar and PNG it belongs to.  op: what one
# op is (the unit of ns/op).
FAMILIES = {
    "malloc_free": ("pairs", "malloc(n), write first and last byte, free; 1 thread; op = one pair"),
    "calloc": ("calloc-realloc-aligned", "calloc(1, n), check one byte is zero, write, free; op = one pair"),
    "realloc_grow": ("calloc-realloc-aligned",
                     "grow a buffer from 16 B by +step bytes (step 0: doubling) to `to`, writing the new last byte, "
                     "then free; op = one realloc() call"),
    "aligned_alloc": ("calloc-realloc-aligned", "aligned_alloc(align, size), write, free; op = one pair"),
    "batch_lifo": ("batch", "allocate N blocks of 64 B (written), then free them newest first; op = one object"),
    "batch_random": ("batch", "allocate N blocks of 64 B (written), then free them in a random order; op = one object"),
    "xthread": ("threads", "2 threads: thread 0 mallocs n bytes and passes them through a ring, thread 1 frees them "
                "(every free is remote); op = one block"),
    "larson": ("threads", "T threads replace random slots of one shared 8192-slot array with new blocks of 8..1000 B "
               "(malloc, write, atomic swap, free the old block); op = one replacement, all threads"),
    "glibc_simple_st": ("glibc-bench-malloc-simple",
                        "glibc benchtests/bench-malloc-simple, main arena, process never threaded: malloc n blocks of "
                        "`size`, free them in order; op = one malloc+free pair"),
    "glibc_simple_mt": ("glibc-bench-malloc-simple",
                        "the same after a thread was created (glibc's SINGLE_THREAD_P false); op = one pair"),
    "glibc_simple_thread": ("glibc-bench-malloc-simple",
                            "the same in a new thread (glibc: a thread arena), timed by that thread; op = one pair"),
    "glibc_thread": ("glibc-bench-malloc-thread",
                     "glibc benchtests/bench-malloc-thread: T threads, each with 1024 slots, free a random slot and "
                     "malloc a random size 4..32768 B (inverse square); op = one free+malloc; process CPU time / all "
                     "ops = glibc's time_per_iteration (the sum of the threads' times / all iterations)"),
    "cache_alloc_free": ("cache-api", "sheaf_cache_alloc, write, sheaf_cache_free (a cache of n-byte objects); op = one pair"),
    "sheaf_malloc_free": ("cache-api", "sheaf_malloc(n), write, sheaf_free: the same through the size classes; op = one pair"),
    "cache_bulk": ("cache-api", "sheaf_cache_alloc_bulk(n) of 64 B objects, write each, sheaf_cache_free_bulk(n); op = one object"),
    "cache_loop": ("cache-api", "the same n objects with one sheaf_cache_alloc / sheaf_cache_free call each; op = one object"),
    "rcu/rcu_free": ("rcu", "malloc a 64 B node, rcu_free(node, rcu_head field); op = one object"),
    "rcu/rcu_free_ptr": ("rcu", "the same with an 8-byte struct rcu_ptr field"),
    "rcu/rcu_free_mightsleep": ("rcu", "the same with rcu_free_mightsleep(node) (no field)"),
    "rcu/rcu_free_nolock": ("rcu", "the same with rcu_free_nolock(node, rcu_ptr field), from normal context"),
    "rcu/rcu_free_nolock_signal": ("rcu", "rcu_free_nolock() from a SIGUSR1 handler, 64 nodes per signal (the signal's "
                                          "cost included)"),
    "rcu/call_rcu": ("rcu", "liburcu call_rcu(&node->rh, cb), cb = free(): one callback per object (baseline)"),
    "rcu/defer_rcu": ("rcu", "liburcu defer_rcu(free, node) (baseline)"),
    "cache_destroy": ("cache-destroy", "sheaf_cache_destroy() of a cache whose objects sit in `threads` threads' sheaves, "
                      "with `live_caches` other caches alive and, with rcu:1, rcu_free()'d objects of every cache "
                      "pending in every thread; op = one destroy"),
}

GROUP_TITLES = {
    "pairs": "malloc/free pairs, 8 B .. 1 MiB",
    "calloc-realloc-aligned": "calloc, realloc growth, aligned_alloc",
    "batch": "batches: allocate N, free N",
    "threads": "threads: producer/consumer, larson",
    "glibc-bench-malloc-simple": "glibc benchtests: bench-malloc-simple",
    "glibc-bench-malloc-thread": "glibc benchtests: bench-malloc-thread",
    "cache-api": "slab cache API (sheaf only)",
    "rcu": "deferred free after a grace period (sheaf only; baselines call_rcu, defer_rcu)",
    "cache-destroy": "cache destroy latency (sheaf only)",
}
MALLOC_GROUPS = ["pairs", "calloc-realloc-aligned", "batch", "threads",
                 "glibc-bench-malloc-simple", "glibc-bench-malloc-thread"]

RCUSCALE_METHODS = ["rcu_free", "rcu_free_ptr", "call_rcu"]


def warn(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr, flush=True)


def die(msg, code=2):
    warn(msg)
    sys.exit(code)


def family_of(name):
    parts = name.split("/")
    if parts[0] == "rcu" and len(parts) > 1:
        return "rcu/" + parts[1]
    return parts[0]


def display_name(name):
    """Row name without Google Benchmark's clock suffixes."""
    return re.sub(r"/(real_time|manual_time|process_time)", "", name)


def clock_of(name):
    """cpu: the thread's CPU time; process: the process's (all threads);
    wall: the wall clock."""
    if "/real_time" in name:
        return "wall"
    if "/process_time" in name:
        return "process"
    if "/manual_time" in name and (name.startswith("rcu/") or name.startswith("xthread/")):
        return "work"   # CPU time of the threads that work, waiting and the rcu reader left out
    return "cpu"    # manual_time: glibc_simple_thread, the worker thread's own CPU time


TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def run_cmd(cmd, timeout=30):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, "", str(e)


# ------------------------------------------------------------ allocators --

def preload_works(so):
    """The loader only warns when a preload fails and runs the program on
    glibc's malloc anyway: check that the object really gets mapped."""
    real = os.path.realpath(so)
    env = dict(os.environ, LD_PRELOAD=so)
    try:
        p = subprocess.run(["cat", "/proc/self/maps"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, universal_newlines=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and real in p.stdout


def dpkg_installed(pkg):
    rc, out, _ = run_cmd(["dpkg-query", "-W", "-f=${Status}", pkg])
    return rc == 0 and "install ok installed" in out


def pkg_version_of_file(path):
    if not shutil.which("dpkg-query"):
        return ""
    for p in (path, os.path.realpath(path)):
        rc, out, _ = run_cmd(["dpkg-query", "-S", p])
        if rc == 0 and out:
            pkg = out.split(":")[0] if ": " not in out else out.split(": ")[0]
            pkg = pkg.split(",")[0].strip()
            rc, ver, _ = run_cmd(["dpkg-query", "-W", "-f=${Version}", pkg])
            if rc == 0:
                return "%s %s" % (pkg, ver)
    return ""


def find_peer(files):
    for d in LIBDIRS:
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p):
                return p
    return None


def maybe_install(args):
    """As root with apt-get: install missing peer packages and gnuplot."""
    if args.no_install or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get") \
            or not shutil.which("dpkg-query"):
        return
    want = []
    if not args.no_peers:
        want += [pkg for _, pkg, files in PEERS if not find_peer(files) and not dpkg_installed(pkg)]
    if not args.no_plot and not shutil.which("gnuplot"):
        want.append("gnuplot-nox")
    if not want:
        return
    warn("installing %s with apt-get (--no-install to skip)" % " ".join(want))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + want
    for attempt in range(2):
        try:
            p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=600)
            if p.returncode == 0:
                return
            err = p.stderr.strip().splitlines()[-1:] if p.stderr else []
        except (OSError, subprocess.TimeoutExpired) as e:
            err = [str(e)]
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=600)
    warn("apt-get install failed (%s); going on with what is installed" % " ".join(err))


def allocators(args):
    """[(label, preload path or '')]: glibc first."""
    out = [("glibc", "")]
    if args.lib:
        if not os.path.isfile(args.lib):
            die("--lib %s does not exist (build the library first)" % args.lib)
        lib = os.path.abspath(args.lib)
        if not preload_works(lib):
            die("LD_PRELOAD=%s: not mapped (try: LD_PRELOAD=%s cat /proc/self/maps)" % (lib, lib))
        out.append((args.name, lib))
    if not args.no_peers:
        for label, _, files in PEERS:
            so = find_peer(files)
            if not so:
                continue
            if label == args.name:
                warn("note: --name %s is taken by --lib, %s not run" % (label, so))
                continue
            if preload_works(so):
                out.append((label, so))
            else:
                warn("warning: %s does not preload, %s skipped" % (so, label))
    for spec in getattr(args, "also", None) or []:
        label, _, so = spec.partition("=")
        if not label or not so or not os.path.isfile(so):
            die("--also %s: want LABEL=PATH of an existing shared object" % spec)
        so = os.path.abspath(so)
        if not preload_works(so):
            die("--also %s: does not preload" % spec)
        out.append((label, so))
    for spec in getattr(args, "variant", None) or []:
        label, _, env = spec.partition("=")
        var, _, val = env.partition("=")
        if not label or not var or not args.lib:
            die("--variant %s: want LABEL=VAR=VALUE (runs --lib with VAR=VALUE)" % spec)
        ALLOC_ENV[label] = {var: val}
        out.append((label, os.path.abspath(args.lib)))
    if args.allocators:
        keep = args.allocators.split(",")
        unknown = [a for a in keep if a not in [l for l, _ in out]]
        if unknown:
            die("--allocators: not available: %s (have %s)" % (",".join(unknown), ",".join(l for l, _ in out)))
        out = [(l, s) for l, s in out if l in keep or l == "glibc"]
    return out


def describe_allocator(label, so):
    if not so:
        return "the C library's malloc, no preload"
    if label in ALLOC_ENV:
        return "%s with %s" % (so, " ".join("%s=%s" % kv for kv in ALLOC_ENV[label].items()))
    v = pkg_version_of_file(so)
    if v:
        return "%s (Debian %s)" % (so, v)
    built = datetime.datetime.utcfromtimestamp(os.path.getmtime(so)).strftime("%Y-%m-%d %H:%M UTC")
    return "%s (built %s)" % (so, built)


# ------------------------------------------------------------------ runs --

PIN_RECHECK_S = 10.0


def pin_to(cpu):
    def f():
        os.sched_setaffinity(0, {cpu})
    return f


def single_threaded(row):
    """Rows that run one thread at a time (bench-malloc-simple's "mt" rows
    run one worker while main waits): these can be pinned to one CPU.  The
    rcu rows are left alone: a reader thread and sheaf's drain thread run
    beside the updater."""
    if row.startswith("rcu/"):
        return False
    m = re.search(r"threads:(\d+)", row)
    return not m or int(m.group(1)) == 1


class Runner:
    def __init__(self, args, total):
        self.args = args
        self.total = total
        self.n = 0
        self.t0 = time.time()
        self.tty = sys.stderr.isatty()
        self.failures = 0
        self.pin_cpus = None    # CPUs to choose from; None: no pinning
        self.pin_cpu = None
        self.pin_checked = -1e9
        self.pin_log = []

    def progress(self, what):
        self.n += 1
        el = time.time() - self.t0
        eta = ""
        if self.n > 1:
            left = el / (self.n - 1) * (self.total - self.n + 1)
            eta = ", ~%dm%02ds left" % (left // 60, left % 60)
        line = "[%d/%d] %s (%dm%02ds%s)" % (self.n, self.total, what, el // 60, el % 60, eta)
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self):
        if self.tty:
            sys.stderr.write("\n")

    def fail(self, what, why, err=""):
        self.failures += 1
        if self.tty:
            sys.stderr.write("\n")
        warn("%s failed: %s%s" % (what, why, ("; stderr: " + " ".join(err.split())[:300]) if err.strip() else ""))

    def calibrate(self, prog):
        """The CPU to pin single-threaded rows to: the fastest, now.

        On a VM a virtual CPU whose host sibling is busy runs at about half
        speed, for minutes; a row that ran there in some repetitions and not
        in others had a median that fell on either side.  Rechecked at most
        every PIN_RECHECK_S seconds, and only between rows, so that all
        allocators of a row's round share one CPU."""
        if self.pin_cpus is None or time.time() - self.pin_checked < PIN_RECHECK_S:
            return self.pin_cpu
        best, seen = None, {}
        for cpu in self.pin_cpus:
            cmd = [prog, "--benchmark_filter=^malloc_free/64$", "--benchmark_min_time=0.02",
                   "--benchmark_format=json"]
            env = dict(os.environ)
            env.pop("LD_PRELOAD", None)
            try:
                p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   universal_newlines=True, timeout=30, preexec_fn=pin_to(cpu))
                ns = json.loads(p.stdout)["benchmarks"][0]["cpu_time"]
            except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError):
                continue
            seen[cpu] = round(ns, 3)
            if best is None or ns < seen[best]:
                best = cpu
        self.pin_checked = time.time()
        if best is not None:
            self.pin_cpu = best
            self.pin_log.append({"t_s": round(self.pin_checked - self.t0, 1), "ns": seen, "cpu": best})
        return self.pin_cpu

    def gbench(self, prog, row, alloc, so, min_time, cpu=None):
        """One process, one row (pinned to cpu unless None).  Returns a run record."""
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if so:
            env["LD_PRELOAD"] = so
        env.update(ALLOC_ENV.get(alloc, {}))
        cmd = [prog, "--benchmark_filter=^%s$" % re.escape(row),
               "--benchmark_min_time=%g" % min_time, "--benchmark_format=json"]
        rec = {"program": os.path.basename(prog), "row": display_name(row), "gbench_name": row,
               "allocator": alloc, "ok": False, "cpu": cpu}
        what = "%s %s under %s" % (rec["program"], rec["row"], alloc)
        t = time.time()
        try:
            p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=self.args.timeout,
                               preexec_fn=pin_to(cpu) if cpu is not None else None)
        except subprocess.TimeoutExpired:
            self.fail(what, "timed out after %d s" % self.args.timeout)
            rec["error"] = "timeout"
            return rec
        except (OSError, subprocess.SubprocessError) as e:   # exec or the pinning failed
            self.fail(what, "cannot start: %s" % e)
            rec["error"] = "cannot start"
            return rec
        rec["process_s"] = round(time.time() - t, 3)
        if p.returncode != 0:
            why = "exit status %d" % p.returncode if p.returncode > 0 else "killed by signal %d" % -p.returncode
            self.fail(what, why, p.stderr)
            rec["error"] = why
            return rec
        try:
            doc = json.loads(p.stdout)
            b = [x for x in doc["benchmarks"] if x.get("run_type", "iteration") == "iteration"][0]
        except (ValueError, KeyError, IndexError):
            self.fail(what, "no JSON result", p.stderr)
            rec["error"] = "no result"
            return rec
        if b.get("error_occurred"):
            self.fail(what, "error: %s" % b.get("error_message", "?"))
            rec["error"] = b.get("error_message", "error")
            return rec
        ips = b.get("items_per_second")
        if not ips:
            self.fail(what, "no items_per_second")
            rec["error"] = "no items"
            return rec
        self.context = doc.get("context", {})
        # Wall clock per op: Google Benchmark's real_time is per iteration
        # of all threads together (iterations counts every thread's).
        wall = None   # (with manual time, real_time is the manual time: no wall figure)
        if b.get("items") and b.get("real_time") is not None and "/manual_time" not in row:
            wall = b["real_time"] * TIME_UNIT_NS.get(b.get("time_unit", "ns"), 1.0) * b["iterations"] / b["items"]
        rec.update(ok=True, ns_per_op=1e9 / ips, wall_ns_per_op=wall, items_per_second=ips,
                   iterations=b.get("iterations"),
                   threads=b.get("threads", 1), clock=clock_of(row),
                   real_time_per_iter=b.get("real_time"), cpu_time_per_iter=b.get("cpu_time"),
                   time_unit=b.get("time_unit"), peak_rss_kib=b.get("peak_rss_kib"),
                   counters={k: v for k, v in b.items()
                             if k in ("objects_per_gp", "single_threaded", "bytes_per_second")})
        return rec

    def rcuscale(self, prog, method, threads, loops):
        # Through sh, which forks: rcuscale reports getrusage()'s ru_maxrss,
        # which after exec() carries the RSS of the process that exec()ed it
        # (this 20 MiB Python, if we started it directly).
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", prog, "--method", method, "--threads", str(threads),
               "--loops", str(loops)]
        rec = {"program": "rcuscale", "row": "rcuscale/%s/threads:%d" % (method, threads),
               "allocator": self.args.name, "ok": False, "method": method, "threads": threads, "loops": loops}
        what = "rcuscale --method %s" % method
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        try:
            p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            self.fail(what, "timed out after %d s" % self.args.timeout)
            rec["error"] = "timeout"
            return rec
        if p.returncode != 0:
            self.fail(what, "exit status %d" % p.returncode, p.stderr)
            rec["error"] = "exit status %d" % p.returncode
            return rec
        m1 = re.search(r"objects=(\d+)", p.stdout)
        m2 = re.search(r"all kfree'ers: (\d+) ns, loops: \d+, batches: (\d+), memory footprint: (\d+)MB", p.stdout)
        m3 = re.search(r"([\d.]+) ns per object; ([\d.]+) ms including the final barrier; ([\d.]+) objects per "
                       r"grace period", p.stdout)
        if not (m1 and m2 and m3):
            self.fail(what, "unexpected output: %r" % p.stdout[:200])
            rec["error"] = "bad output"
            return rec
        rec.update(ok=True, objects=int(m1.group(1)), total_ns=int(m2.group(1)), batches=int(m2.group(2)),
                   footprint_mb=int(m2.group(3)), ns_per_op=float(m3.group(1)),
                   barrier_total_ms=float(m3.group(2)), objects_per_gp=float(m3.group(3)),
                   output=p.stdout.strip().splitlines())
        return rec


def list_rows(prog, pattern):
    rc, out, err = run_cmd([prog, "--benchmark_list_tests=true"], timeout=60)
    if rc != 0:
        die("'%s --benchmark_list_tests' failed: %s" % (prog, err.strip()[:300]))
    rows = [l.strip() for l in out.splitlines() if l.strip()]
    if pattern:
        rows = [r for r in rows if re.search(pattern, display_name(r))]
    return rows


# ----------------------------------------------------------------- stats --

def aggregate(runs, key):
    """{key(run): {...}} with median ns/op, spread, max peak RSS."""
    by = {}
    for r in runs:
        by.setdefault(key(r), []).append(r)
    out = {}
    for k, rs in by.items():
        ok = [r for r in rs if r["ok"]]
        a = {"runs": len(rs), "failed": len(rs) - len(ok)}
        if ok:
            v = [r["ns_per_op"] for r in ok]
            med = statistics.median(v)
            a.update(median_ns=med, min_ns=min(v), max_ns=max(v), ns_runs=[round(x, 3) for x in v],
                     spread=(max(v) - min(v)) / med if med > 0 else 0.0)
            wl = [r["wall_ns_per_op"] for r in ok if r.get("wall_ns_per_op")]
            if wl:
                a["median_wall_ns"] = statistics.median(wl)
            rss = [r.get("peak_rss_kib") for r in ok if r.get("peak_rss_kib") is not None]
            if rss:
                a["peak_rss_kib"] = max(rss)
            cs = {}
            for r in ok:
                for c, x in (r.get("counters") or {}).items():
                    cs.setdefault(c, []).append(x)
            a["counters"] = {c: statistics.median(x) for c, x in cs.items()}
            a["clock"] = ok[0].get("clock")
            a["threads"] = ok[0].get("threads", 1)
        out[k] = a
    return out


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return "%.2f ms" % (ns / 1e6)
    if ns >= 1e4:
        return "%.1f us" % (ns / 1e3)
    if ns >= 100:
        return "%.0f ns" % ns
    return "%.2f ns" % ns


def fmt_rate(ns):
    if not ns:
        return "-"
    r = 1e9 / ns
    if r >= 1e6:
        return "%.1f M/s" % (r / 1e6)
    if r >= 1e3:
        return "%.1f k/s" % (r / 1e3)
    return "%.0f /s" % r


def fmt_ratio(x):
    return "-" if x is None else "%.2fx" % x


def fmt_mib(kib):
    return "-" if kib is None else "%.1f" % (kib / 1024.0)


# --------------------------------------------------------------- machine --

def machine_info(args, srcdir):
    info = {}
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu"] = cpu or platform.machine()
    info["cores"] = os.cpu_count()
    info["kernel"] = platform.release()
    try:
        info["libc"] = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        info["libc"] = "unknown"
    v = pkg_version_of_file("/lib/%s-linux-gnu/libc.so.6" % platform.machine())
    if v:
        info["libc"] += " (Debian %s)" % v
    rc, out, _ = run_cmd(["cc", "--version"])
    info["compiler"] = out.splitlines()[0] if rc == 0 and out else "unknown"
    gb = ""
    for so in ("/usr/lib/%s-linux-gnu/libbenchmark.so" % platform.machine(),):
        if os.path.exists(so):
            gb = pkg_version_of_file(os.path.realpath(so))
    rc, out, _ = run_cmd(["pkg-config", "--modversion", "benchmark"])
    info["google_benchmark"] = (out.strip() if rc == 0 else "?") + ((" (Debian %s)" % gb) if gb else "")
    u = pkg_version_of_file("/usr/lib/%s-linux-gnu/liburcu-qsbr.so.8" % platform.machine())
    rc, out, _ = run_cmd(["pkg-config", "--modversion", "liburcu-qsbr"])
    info["liburcu"] = (out.strip() if rc == 0 else "?") + ((" (Debian %s)" % u) if u else "")
    rc, out, _ = run_cmd(["git", "-C", srcdir, "describe", "--always", "--dirty", "--tags"])
    info["sheaf_source"] = out.strip() if rc == 0 else "unknown"
    try:
        with open("/proc/loadavg") as f:
            info["loadavg"] = f.read().split()[0]
    except OSError:
        info["loadavg"] = "?"
    return info


# ------------------------------------------------------------------ plot --

def plot(args, out, groups_data, row_data, rcu_data):
    """groups_data: (title, [labels], allocs, {alloc: [ratio]}) per PNG."""
    gp = shutil.which("gnuplot")
    script = os.path.join(HERE, "plot.gp")
    if not gp:
        warn("gnuplot not found (apt-get install gnuplot-nox): no PNG written")
        return []
    made = []
    tmp = tempfile.mkdtemp(prefix="sheaf-plot.")
    try:
        for fname, title, ylabel, labels, allocs, ratios, lt0 in groups_data + row_data + rcu_data:
            vals = [x for a in allocs for x in ratios[a] if x]
            if not vals:
                continue
            ymin = 2 ** math.floor(math.log2(min(vals) / 1.3))
            ymax = 2 ** math.ceil(math.log2(max(vals) * 1.6))
            ymin, ymax = min(ymin, 0.5), max(ymax, 2)
            dat = os.path.join(tmp, fname + ".dat")
            with open(dat, "w") as f:
                f.write("row " + " ".join('"%s"' % a for a in allocs) + "\n")
                for i, lab in enumerate(labels):
                    f.write('"%s" ' % lab + " ".join(
                        ("%.4f" % ratios[a][i]) if ratios[a][i] else "NaN" for a in allocs) + "\n")
            png = os.path.join(out, fname + ".png")
            width = max(800, min(2400, 140 + len(labels) * (18 * len(allocs) + 14)))
            cmd = [gp, "-e", "data='%s'; out='%s'; plot_title='%s'; n=%d; ymin=%g; ymax=%g; width=%d; ylab='%s'; "
                   "lt0=%d" % (dat, png + ".tmp", title.replace("'", ""), len(allocs), ymin, ymax, width, ylabel,
                               lt0), script]
            rc, _, err = run_cmd(cmd, timeout=60)
            if rc != 0 or not os.path.exists(png + ".tmp"):
                warn("gnuplot failed for %s: %s" % (png, err.strip()[:300]))
                continue
            os.replace(png + ".tmp", png)
            made.append(os.path.basename(png))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return made


# ------------------------------------------------------------------ main --

def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--builddir", default=".", help="build tree with benchmarks/bench_malloc etc. (default .)")
    ap.add_argument("--lib", help="libsheaf.so to preload (default BUILDDIR/.libs/libsheaf.so)")
    ap.add_argument("--name", default="sheaf", help="label of --lib in the tables (default sheaf)")
    ap.add_argument("--out", default="benchmarks/results", help="output directory")
    ap.add_argument("--quick", action="store_true", help="every row once, short runs (under a minute)")
    ap.add_argument("--reps", type=int, help="repetitions (default 5, --quick 1)")
    ap.add_argument("--extra-reps", type=int,
                    help="more repetitions of the rows whose spread exceeds --noisy (default 4, --quick 0)")
    ap.add_argument("--noisy", type=float, default=0.25,
                    help="spread ((max - min) / median) above which a row is noisy (default 0.25)")
    ap.add_argument("--min-time", type=float,
                    help="Google Benchmark min time per run, s (default 0.05, --quick 0.005; rows on the process or wall clock get 2x)")
    ap.add_argument("--only", help="regular expression: only rows whose name matches (e.g. 'malloc_free|larson')")
    ap.add_argument("--allocators", help="comma-separated subset of glibc,sheaf,jemalloc,tcmalloc,mimalloc")
    ap.add_argument("--programs", default="bench_malloc,bench_sheaf,rcuscale",
                    help="which programs to run (default all three)")
    ap.add_argument("--no-peers", action="store_true", help="skip jemalloc / tcmalloc / mimalloc")
    ap.add_argument("--also", action="append", metavar="LABEL=PATH",
                    help="one more allocator to preload (e.g. sheaf-nohard=/tmp/nohard/.libs/libsheaf.so)")
    ap.add_argument("--variant", action="append", metavar="LABEL=VAR=VALUE",
                    help="--lib once more with an environment variable (e.g. sheaf-secure=SHEAF_OPTIONS=secure=1)")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get (it only runs as root)")
    ap.add_argument("--no-plot", action="store_true", help="no PNG")
    ap.add_argument("--pin", default="auto",
                    help="single-threaded rows: 'auto' (default: pin each row's round to the CPU that measured "
                         "fastest at the last check), a CPU number, or 'off'")
    ap.add_argument("--timeout", type=int, default=120, help="kill a run after S seconds (default 120)")
    ap.add_argument("--render", metavar="LATEST_JSON",
                    help="run nothing: write the tables and PNGs again from a saved latest.json")
    args = ap.parse_args()

    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        return render(args, saved["input"], saved["runs"])

    quick = args.quick
    reps = args.reps or (1 if quick else 5)
    if reps < 1:
        die("--reps wants a positive integer")
    min_time = args.min_time or (0.005 if quick else 0.05)
    extra = args.extra_reps if args.extra_reps is not None else (0 if quick else 4)
    if extra < 0:
        die("--extra-reps wants zero or a positive integer")
    bdir = os.path.abspath(args.builddir)
    if not args.lib:
        args.lib = os.path.join(bdir, ".libs", "libsheaf.so")
    srcdir = os.path.dirname(HERE)
    progs = args.programs.split(",")
    for p in progs:
        if p not in ("bench_malloc", "bench_sheaf", "rcuscale"):
            die("--programs: unknown program %s" % p)
    paths = {p: os.path.join(bdir, "benchmarks", p) for p in progs}
    for p, path in paths.items():
        if not os.access(path, os.X_OK):
            die("%s is missing (build it: make %s)" % (path, "benchmarks/" + p))
    if args.name == "glibc":
        die("--name glibc is reserved for the system malloc")

    maybe_install(args)
    allocs = allocators(args)
    names = [a for a, _ in allocs]
    rows_malloc = list_rows(paths["bench_malloc"], args.only) if "bench_malloc" in paths else []
    rows_sheaf = list_rows(paths["bench_sheaf"], args.only) if "bench_sheaf" in paths else []
    do_rcuscale = "rcuscale" in paths and (not args.only or re.search(args.only, "rcuscale"))
    if not rows_malloc and not rows_sheaf and not do_rcuscale:
        die("no rows selected")
    sheaf_ok = args.name in names
    if not sheaf_ok:
        rows_sheaf, do_rcuscale = [], False
    rcuscale_loops = 20 if quick else 150
    total = reps * (len(rows_malloc) * len(allocs) + len(rows_sheaf) +
                    (len(RCUSCALE_METHODS) if do_rcuscale else 0))

    info = machine_info(args, srcdir)
    date = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")
    os.makedirs(args.out, exist_ok=True)
    warn("%d runs: %d bench_malloc rows x %d allocators (%s), %d bench_sheaf rows, %s; %d repetition(s), "
         "min time %g s; load average %s" % (total // reps * reps, len(rows_malloc), len(allocs), ",".join(names),
                                               len(rows_sheaf), "rcuscale" if do_rcuscale else "no rcuscale",
                                               reps, min_time, info["loadavg"]))

    R = Runner(args, total)
    R.context = {}
    mask = sorted(os.sched_getaffinity(0))
    if args.pin == "off" or len(mask) < 2:
        pin_fixed = None
    elif args.pin == "auto":
        pin_fixed = None
        R.pin_cpus = mask
    else:
        try:
            pin_fixed = int(args.pin)
        except ValueError:
            die("--pin wants auto, off or a CPU number")
        if pin_fixed not in mask:
            die("--pin %d: not in this process's CPU affinity mask %s" % (pin_fixed, mask))
    calib_prog = paths.get("bench_malloc")

    def cpu_for(row):
        if not single_threaded(row):
            return None
        if pin_fixed is not None:
            return pin_fixed
        return R.calibrate(calib_prog) if calib_prog else None
    runs = []
    t_start = time.time()
    gb_context = {}
    def run_rows(rep, of, malloc_rows, sheaf_rows):
        nonlocal gb_context
        for row in malloc_rows:
            mt = min_time * (2 if clock_of(row) != "cpu" else 1)
            cpu = cpu_for(row)
            for k in range(len(allocs)):
                label, so = allocs[(k + rep) % len(allocs)]
                R.progress("rep %d/%d: bench_malloc %s under %s" % (rep + 1, of, display_name(row), label))
                rec = R.gbench(paths["bench_malloc"], row, label, so, mt, cpu)
                rec["rep"] = rep
                runs.append(rec)
                gb_context = gb_context or R.context
        for row in sheaf_rows:
            mt = min_time * (2 if clock_of(row) != "cpu" else 1)
            R.progress("rep %d/%d: bench_sheaf %s (sheaf only)" % (rep + 1, of, display_name(row)))
            rec = R.gbench(paths["bench_sheaf"], row, args.name, "", mt, cpu_for(row))
            rec["rep"] = rep
            runs.append(rec)

    for rep in range(reps):
        run_rows(rep, reps, rows_malloc, rows_sheaf)
        if do_rcuscale:
            for m in RCUSCALE_METHODS:
                R.progress("rep %d/%d: rcuscale --method %s (sheaf only)" % (rep + 1, reps, m))
                rec = R.rcuscale(paths["rcuscale"], m, 2, rcuscale_loops)
                rec["rep"] = rep
                runs.append(rec)
    # Noisy rows: more repetitions, of every allocator alike.
    noisy_malloc, noisy_sheaf = [], []
    if extra and reps >= 2:
        agg = aggregate([r for r in runs if r["program"] != "rcuscale"], lambda r: r["row"] + "\0" + r["allocator"])
        def noisy(row, labels):
            return any(agg.get(row + "\0" + a, {}).get("spread", 0) > args.noisy for a in labels)
        noisy_malloc = [r for r in rows_malloc if noisy(r, names)]
        noisy_sheaf = [r for r in rows_sheaf if noisy(r, [args.name])]
        if noisy_malloc or noisy_sheaf:
            R.total += extra * (len(noisy_malloc) * len(allocs) + len(noisy_sheaf))
            for rep in range(reps, reps + extra):
                run_rows(rep, reps + extra, noisy_malloc, noisy_sheaf)
    R.done()
    elapsed = time.time() - t_start
    try:
        with open("/proc/loadavg") as f:
            load_end = f.read().split()[0]
    except OSError:
        load_end = "?"

    ctx = {"quick": quick, "reps": reps, "min_time": min_time, "allocs": allocs,
           "extra_reps": extra, "noisy": args.noisy,
           "noisy_rows": [display_name(r) for r in noisy_malloc + noisy_sheaf],
           "rows_malloc": rows_malloc, "rows_sheaf": rows_sheaf, "do_rcuscale": bool(do_rcuscale),
           "rcuscale_loops": rcuscale_loops, "info": info, "date": date, "elapsed": elapsed,
           "load_end": load_end, "gb_context": {k: v for k, v in gb_context.items() if k != "caches"},
           "failures": R.failures, "name": args.name, "pin": args.pin, "pin_log": R.pin_log,
           "alloc_desc": [describe_allocator(a, so) for a, so in allocs]}
    return render(args, ctx, runs)


RUN_KEYS = ("rep", "program", "row", "allocator", "ok", "cpu", "error", "clock", "ns_per_op", "wall_ns_per_op", "peak_rss_kib",
            "iterations", "counters", "process_s", "method", "threads", "loops", "objects", "total_ns", "batches",
            "footprint_mb", "barrier_total_ms", "objects_per_gp")


def rounded(v):
    """Floats to 6 significant digits, recursively: latest.json stays small."""
    if isinstance(v, float):
        return float("%.6g" % v)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return v


def slim(r):
    """A run's record for latest.json: the figures, rounded, no repetition."""
    return {k: rounded(r[k]) for k in RUN_KEYS if r.get(k) not in (None, {})}


def render(args, ctx, runs):
    """latest.md, the PNGs and latest.json from the runs (also from a saved
    latest.json: --render)."""
    quick, reps, min_time = ctx["quick"], ctx["reps"], ctx["min_time"]
    allocs = [tuple(a) for a in ctx["allocs"]]
    names = [a for a, _ in allocs]
    rows_malloc, rows_sheaf = ctx["rows_malloc"], ctx["rows_sheaf"]
    do_rcuscale, rcuscale_loops = ctx["do_rcuscale"], ctx["rcuscale_loops"]
    info, date, elapsed, load_end = ctx["info"], ctx["date"], ctx["elapsed"], ctx["load_end"]
    gb_context, failures = ctx["gb_context"], ctx["failures"]
    args.name = ctx["name"]
    descs = ctx.get("alloc_desc") or [describe_allocator(a, so) for a, so in allocs]
    sheaf_ok = args.name in names
    os.makedirs(args.out, exist_ok=True)

    # ------------------------------------------------------------ tables --
    agg = aggregate([r for r in runs if r["program"] != "rcuscale"], lambda r: (r["row"], r["allocator"]))
    rsagg = aggregate([r for r in runs if r["program"] == "rcuscale"], lambda r: r["row"])
    mrows = [display_name(r) for r in rows_malloc]
    srows = [display_name(r) for r in rows_sheaf]
    peers = [a for a in names if a in [l for l, _, _ in PEERS]]   # not --also / --variant

    def med(row, a):
        x = agg.get((row, a))
        return x.get("median_ns") if x else None

    def ratio(row, a):
        g, v = med(row, "glibc"), med(row, a)
        return g / v if g and v else None

    group_rows = {}
    for r in mrows:
        group_rows.setdefault(FAMILIES.get(family_of(r), ("other", ""))[0], []).append(r)
    summary = {"geomean_vs_glibc": {}, "groups": {}, "faster_slower": {}, "geomean_of_groups": {}}
    for a in names:
        summary["geomean_vs_glibc"][a] = geomean([ratio(r, a) for r in mrows])
        rs = [ratio(r, a) for r in mrows if ratio(r, a)]
        summary["faster_slower"][a] = [sum(1 for x in rs if x > 1), sum(1 for x in rs if x < 1), len(rs)]
        for g in MALLOC_GROUPS:
            if g in group_rows:
                summary["groups"].setdefault(g, {})[a] = geomean([ratio(r, a) for r in group_rows[g]])
        summary["geomean_of_groups"][a] = geomean([summary["groups"][g].get(a) for g in MALLOC_GROUPS
                                                   if g in group_rows])
    slower_glibc, behind_peer = [], []
    if sheaf_ok:
        for r in mrows:
            s, x = med(r, args.name), ratio(r, args.name)
            if x is not None and x < 1:
                slower_glibc.append((r, x))
            pv = [(med(r, p), p) for p in peers if med(r, p)]
            if s and pv:
                best, bp = min(pv)
                if s > best * 1.10:
                    behind_peer.append((r, s / best, bp))
    best_peer = None
    if peers:
        gp = [(summary["geomean_vs_glibc"][p], p) for p in peers if summary["geomean_vs_glibc"][p]]
        best_peer = max(gp) if gp else None

    md = []
    w = md.append
    w("# sheaf benchmarks: allocator comparison")
    w("")
    noisy_rows = ctx.get("noisy_rows") or []
    w("- date: %s; mode: %s, %d interleaved repetition(s) per row and allocator%s, one process per run, "
      "Google Benchmark min time %g s (x2 for rows on the process or wall clock); %.0f s in all"
      % (date, "quick" if quick else "full", reps,
         " and %d more for the %d row(s) whose spread exceeded %.0f%% under some allocator after those (%s)"
         % (ctx["extra_reps"], len(noisy_rows), 100 * ctx["noisy"], ", ".join("`%s`" % r for r in noisy_rows))
         if noisy_rows else "", min_time, elapsed))
    w("- machine: %s, %s cores, Linux %s; load average (1 min) %s at the start, %s at the end "
      "(the runs themselves add 1-2; more is other work on the machine)"
      % (info["cpu"], info["cores"], info["kernel"], info["loadavg"], load_end))
    pin_log = ctx.get("pin_log") or []
    if ctx.get("pin", "off") == "auto" and pin_log:
        used = sorted(set(p["cpu"] for p in pin_log))
        w("- single-threaded rows pinned to one CPU per row and repetition, all allocators alike: the one that "
          "ran a 20 ms malloc/free loop fastest at the last check (%d checks; CPU %s chosen; the slowest CPU "
          "took up to %.2fx the fastest's time)"
          % (len(pin_log), ", ".join(str(c) for c in used),
             max(max(p["ns"].values()) / min(p["ns"].values()) for p in pin_log if p["ns"])))
    elif ctx.get("pin") not in (None, "auto", "off"):
        w("- single-threaded rows pinned to CPU %s" % ctx["pin"])
    else:
        w("- no CPU pinning")
    w("- C library: %s; compiler: %s" % (info["libc"], info["compiler"]))
    w("- Google Benchmark %s; its JSON context says library_build_type = **%s**: that is how Debian compiled "
      "the harness library (it prints \"Library was built as DEBUG\"), it concerns only the harness's own "
      "bookkeeping between timed batches, not the code measured; liburcu %s"
      % (info["google_benchmark"], gb_context.get("library_build_type", "?"), info["liburcu"]))
    w("- sheaf source: %s" % info["sheaf_source"])
    for (a, so), d in zip(allocs, descs):
        w("- %s: %s" % (a, d))
    if failures:
        w("- **%d run(s) failed** (FAIL in the tables; see the driver's stderr)" % failures)
    w("")
    w("ns/op: median over the repetitions of the time per op (the op is given per table), on the row's clock: "
      "**cpu** = CPU time of the thread that runs the row (single-threaded rows), **process** = CPU time of the "
      "whole process, all threads (rows with several threads: the CPU cost of an op), **wall** = wall clock "
      "(rows whose cost is waiting). CPU clocks keep other load on a shared machine out of the figures; "
      "wall ns/op is given beside them. Mops/s = 1000 / (ns/op). vs glibc = glibc's ns/op / this "
      "allocator's (above 1.00x: faster than glibc). spread = (max - min) / median over the repetitions: a "
      "ratio closer to 1.00x than the spreads is noise. peak RSS: the largest over the repetitions of the "
      "process's peak, including the program's baseline of 3-8 MiB (libstdc++, the harness).")
    w("")
    if mrows:
        w("## Summary (bench_malloc: the same binary under each allocator)")
        w("")
        w("Geometric mean of the speed vs glibc over the rows: over all rows (one vote per row), per group, and "
          "over the groups' means (one vote per group, so that the 36 rows of glibc's bench-malloc-simple do not "
          "outvote the rest).")
        w("")
        hdr = ["allocator", "all rows", "groups"] + [g for g in MALLOC_GROUPS if g in group_rows] + \
            ["faster / slower than glibc"]
        w("| " + " | ".join(hdr) + " |")
        w("|---|" + "--:|" * (len(hdr) - 1))
        for a in names:
            cells = [a, fmt_ratio(summary["geomean_vs_glibc"][a]), fmt_ratio(summary["geomean_of_groups"][a])]
            cells += [fmt_ratio(summary["groups"][g].get(a)) for g in MALLOC_GROUPS if g in group_rows]
            fs = summary["faster_slower"][a]
            cells.append("%d / %d of %d" % (fs[0], fs[1], fs[2]))
            w("| " + " | ".join(cells) + " |")
        w("")
        if sheaf_ok:
            w("Against the targets:")
            w("")
            w("- every row faster than glibc: %s" % (
                "**yes**" if not slower_glibc else "**no**: slower on %s" % ", ".join(
                    "`%s` (%.2fx)" % (r, x) for r, x in slower_glibc)))
            g = summary["geomean_vs_glibc"].get(args.name)
            w("- geometric mean >= 1.5x glibc: %s (%s)" % ("**yes**" if g and g >= 1.5 else "**no**", fmt_ratio(g)))
            if best_peer:
                w("- within 10%% of the best peer's geometric mean (%s, %s): %s (%s is %.0f%% of it)" % (
                    best_peer[1], fmt_ratio(best_peer[0]),
                    "**yes**" if g and g >= 0.9 * best_peer[0] else "**no**", args.name,
                    100.0 * g / best_peer[0] if g else 0))
            if behind_peer:
                w("- rows where %s is more than 10%% behind the best peer: %s" % (args.name, ", ".join(
                    "`%s` (%.2fx the time of %s)" % (r, x, p) for r, x, p in behind_peer)))
            w("")
        w("## Overview: ns/op (speed vs glibc)")
        w("")
        w("| row | clock | " + " | ".join(names) + " |")
        w("|---|---|" + "--:|" * len(names))
        for r in mrows:
            cells = []
            for a in names:
                x = agg.get((r, a), {})
                if "median_ns" not in x:
                    cells.append("FAIL")
                else:
                    cells.append("%s (%s)" % (fmt_ns(x["median_ns"]), fmt_ratio(ratio(r, a))))
            ck = agg.get((r, "glibc"), {}).get("clock", "?")
            w("| %s | %s | %s |" % (r, ck, " | ".join(cells)))
        w("| **geometric mean** | | " + " | ".join(
            "**%s**" % fmt_ratio(summary["geomean_vs_glibc"][a]) for a in names) + " |")
        w("")
        w("## Per benchmark")
        seen = []
        for r in mrows:
            fam = family_of(r)
            if fam in seen:
                continue
            seen.append(fam)
            w("")
            w("### %s" % fam)
            w("")
            w(FAMILIES.get(fam, ("", ""))[1] + ". Clock: %s." % agg.get((r, "glibc"), {}).get("clock", "?"))
            w("")
            w("| row | allocator | ns/op | Mops/s | wall ns/op | peak RSS MiB | vs glibc | spread |")
            w("|---|---|--:|--:|--:|--:|--:|--:|")
            for rr in [x for x in mrows if family_of(x) == fam]:
                for a in names:
                    x = agg.get((rr, a), {})
                    if "median_ns" not in x:
                        w("| %s | %s | FAIL | | | | | |" % (rr, a))
                        continue
                    extra = ""
                    if x["failed"]:
                        extra = " (%d failed)" % x["failed"]
                    c = x.get("counters", {})
                    if fam == "glibc_simple_st" and c.get("single_threaded") == 0:
                        extra += " (not single-threaded!)"
                    w("| %s | %s | %s | %.1f | %s | %s | %s | %.0f%%%s |" % (
                        rr, a, fmt_ns(x["median_ns"]), 1e3 / x["median_ns"], fmt_ns(x.get("median_wall_ns")),
                        fmt_mib(x.get("peak_rss_kib")), fmt_ratio(ratio(rr, a)), 100 * x["spread"], extra))
    if srows:
        w("")
        w("## sheaf only (bench_sheaf, linked with libsheaf)")
        w("")
        w("These rows need sheaf's API, so they run on sheaf only; the call_rcu and defer_rcu baselines use "
          "sheaf's malloc and free too, so the rcu rows compare the deferral mechanisms with the allocator held "
          "constant. The rcu rows run 1 or 2 updater threads and one QSBR reader thread; every batch ends with "
          "the method's barrier inside the timed region, so ns/op includes freeing, not just queueing.")
        seen = []
        for r in srows:
            fam = family_of(r)
            grp = FAMILIES.get(fam, ("other", ""))[0]
            if grp in seen:
                continue
            seen.append(grp)
            w("")
            w("### %s" % GROUP_TITLES.get(grp, grp))
            w("")
            for f in [family_of(x) for x in srows if FAMILIES.get(family_of(x), ("other",))[0] == grp]:
                line = "- `%s`: %s" % (f, FAMILIES.get(f, ("", "?"))[1])
                if line not in md:
                    w(line)
            w("")
            is_rcu = grp == "rcu"
            w("| row | clock | ns/op | Mops/s | wall ns/op | peak RSS MiB | spread |%s" % (
                " vs call_rcu | objects per grace period |" if is_rcu else ""))
            w("|---|---|--:|--:|--:|--:|--:|%s" % ("--:|--:|" if is_rcu else ""))
            for rr in [x for x in srows if FAMILIES.get(family_of(x), ("other",))[0] == grp]:
                x = agg.get((rr, args.name), {})
                if "median_ns" not in x:
                    w("| %s | | FAIL | | | | |%s" % (rr, " | |" if is_rcu else ""))
                    continue
                cells = [rr, x.get("clock", "?"), fmt_ns(x["median_ns"]), "%.2f" % (1e3 / x["median_ns"]),
                         fmt_ns(x.get("median_wall_ns")), fmt_mib(x.get("peak_rss_kib")),
                         "%.0f%%" % (100 * x["spread"])]
                if is_rcu:
                    base = re.sub(r"^rcu/[^/]+", "rcu/call_rcu", rr)
                    b = agg.get((base, args.name), {}).get("median_ns")
                    cells.append(fmt_ratio(b / x["median_ns"]) if b else "-")
                    o = x.get("counters", {}).get("objects_per_gp")
                    cells.append("%.0f" % o if o else "-")
                w("| " + " | ".join(cells) + " |")
        w("")
        w("`rcu_free_nolock()` rows: measured from normal context and from a signal handler above.")
    if do_rcuscale:
        w("")
        w("## rcuscale (port of the kernel's kfree_rcu scale test)")
        w("")
        w("`rcuscale --threads 2 --loops %d` (alloc_num 8000, 1 QSBR reader): each thread allocates 24-byte "
          "objects with an rcu_head and frees them after a grace period. The kernel's three figures (total time "
          "of the kfree'ers, grace periods elapsed = batches, memory footprint) and the time including the final "
          "barrier; medians over the repetitions." % rcuscale_loops)
        w("")
        w("| method | ns/object | spread | total ms (kfree'ers) | ms incl. barrier | batches | objects per grace period | footprint MB |")
        w("|---|--:|--:|--:|--:|--:|--:|--:|")
        for m in RCUSCALE_METHODS:
            key = "rcuscale/%s/threads:2" % m
            rs = [r for r in runs if r["program"] == "rcuscale" and r["row"] == key and r["ok"]]
            x = rsagg.get(key, {})
            if not rs:
                w("| %s | FAIL | | | | | | |" % m)
                continue
            mid = lambda k: statistics.median([r[k] for r in rs])
            w("| %s | %.1f | %.0f%% | %.1f | %.1f | %s | %s | %d |" % (
                m, x["median_ns"], 100 * x["spread"], mid("total_ns") / 1e6, mid("barrier_total_ms"),
                "%.0f" % mid("batches") if m != "call_rcu" else "- (liburcu's)",
                "%.0f" % mid("objects_per_gp") if m != "call_rcu" else "-", max(r["footprint_mb"] for r in rs)))

    # ------------------------------------------------------------- plots --
    pngs = []
    if not args.no_plot and mrows:
        gl = [g for g in MALLOC_GROUPS if g in group_rows]
        over = ("latest", "speed vs glibc, geometric mean per group (bench_malloc)",
                "speed vs glibc = 1.0 (log scale, higher is better)",
                ["all rows"] + gl, names,
                {a: [summary["geomean_vs_glibc"][a]] + [summary["groups"][g].get(a) for g in gl] for a in names}, 0)
        per = []
        for g in gl:
            rs = group_rows[g]
            per.append(("latest-" + g, GROUP_TITLES.get(g, g) + ": speed vs glibc",
                        "speed vs glibc = 1.0 (log scale, higher is better)",
                        [re.sub(r"^glibc_simple_", "", x).replace("size:", "").replace("blocks:", "")
                         for x in rs], names, {a: [ratio(x, a) for x in rs] for a in names}, 0))
        rcu = []
        if sheaf_ok:
            rr = [x for x in srows if family_of(x).startswith("rcu/")]
            if rr:
                vals = []
                for x in rr:
                    b = agg.get((re.sub(r"^rcu/[^/]+", "rcu/call_rcu", x), args.name), {}).get("median_ns")
                    v = agg.get((x, args.name), {}).get("median_ns")
                    vals.append(b / v if b and v else None)
                rcu.append(("latest-rcu", "deferred free (sheaf only): speed vs call_rcu+free",
                            "speed vs call_rcu+free = 1.0 (log scale)",
                            [x[4:] for x in rr], [args.name], {args.name: vals}, 1))
        pngs = plot(args, args.out, [over], per, rcu)
        if pngs:
            w("")
            w("## Figures")
            w("")
            for p in pngs:
                w("![%s](%s)" % (p[:-4], p))
                w("")

    text = "\n".join(md).rstrip() + "\n"
    tmpf = os.path.join(args.out, "latest.md.tmp")
    with open(tmpf, "w") as f:
        f.write(text)
    os.replace(tmpf, os.path.join(args.out, "latest.md"))

    doc = {
        "date": date, "mode": "quick" if quick else "full", "reps": reps, "min_time_s": min_time,
        "elapsed_s": round(elapsed, 1), "failed_runs": failures, "machine": info, "loadavg_end": load_end,
        "google_benchmark_context": gb_context,
        "allocators": [{"name": a, "lib": so, "desc": d} for (a, so), d in zip(allocs, descs)],
        "summary": {
            "geomean_speed_vs_glibc": summary["geomean_vs_glibc"],
            "group_geomean_speed_vs_glibc": summary["groups"],
            "geomean_of_group_geomeans": summary["geomean_of_groups"],
            "faster_slower_rows": summary["faster_slower"],
            "sheaf_slower_than_glibc": [{"row": r, "speed_vs_glibc": x} for r, x in slower_glibc],
            "sheaf_behind_best_peer_10pct": [{"row": r, "time_vs_best_peer": x, "peer": p}
                                             for r, x, p in behind_peer],
        },
        "pngs": pngs,
        "input": ctx,
        "rows": [dict(row=k[0], allocator=k[1], speed_vs_glibc=(ratio(k[0], k[1]) if k[0] in mrows else None), **v)
                 for k, v in sorted(agg.items())],
        "rcuscale": [dict(row=k, **v) for k, v in sorted(rsagg.items())],
        "runs": [slim(r) for r in runs],
    }
    # Readable and not too large: the summary indented, then one line per
    # aggregated row and per run.
    big = ("rows", "rcuscale", "runs")
    text_json = json.dumps({k: v for k, v in doc.items() if k not in big}, indent=1)[:-2]
    for k in big:
        text_json += ',\n "%s": [\n  %s\n ]' % (k, ",\n  ".join(json.dumps(rounded(x), separators=(",", ":"))
                                                           for x in doc[k]))
    text_json += "\n}\n"
    tmpf = os.path.join(args.out, "latest.json.tmp")
    with open(tmpf, "w") as f:
        f.write(text_json)
    os.replace(tmpf, os.path.join(args.out, "latest.json"))

    # stdout: the summary part of latest.md
    cut = text.find("## Overview")
    print(text[:cut] if cut > 0 else text)
    warn("wrote %s/latest.md, latest.json%s (%.0f s)" % (
        args.out, "".join(", " + p for p in pngs), elapsed))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
