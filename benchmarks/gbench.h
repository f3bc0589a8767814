/*
 * gbench.h - a thin C interface to Google Benchmark (C++).
 *
 * Google Benchmark has no C API.  This header and gbench.cc (about 150
 * lines of C++, compiled into the program) let a benchmark be a plain C
 * function, so that C code measures what it would measure in C++: the same
 * iteration loop, the same adaptive iteration count, multi-threaded runs,
 * counters, console / JSON / CSV output and the same command line.
 * Nothing in it is specific to sheaf; copy both files to reuse them (C99 or
 * later, C++11, Google Benchmark >= 1.7).
 *
 * A benchmark:
 *
 *     #include "gbench.h"
 *
 *     static void bm_malloc_free(gb_state *st, void *arg)
 *     {
 *             size_t size = (size_t)gb_state_range(st, 0);
 *
 *             GB_FOR(st, i) {                  // the timed loop
 *                     void *p = malloc(size);
 *                     gb_do_not_optimize(p);   // the pair cannot be elided
 *                     free(p);
 *             }
 *             gb_set_items_processed(st, gb_state_iterations(st));
 *     }
 *
 *     int main(int argc, char **argv)
 *     {
 *             gb_bench *b = gb_register("malloc_free", bm_malloc_free, NULL);
 *             gb_range_multiplier(b, 4);
 *             gb_range(b, 8, 1 << 20);        // malloc_free/8, /32, ... /1048576
 *             return gb_main(argc, argv);     // all --benchmark_* flags work
 *     }
 *
 * and then
 *
 *     ./prog --benchmark_filter='malloc_free/64$' --benchmark_format=json
 *     ./prog --benchmark_list_tests
 *     ./prog --benchmark_out=r.json --benchmark_out_format=json --benchmark_min_time=0.1
 *
 * Registration (before gb_main()).  gb_register() copies nothing: `name` is
 * copied by Google Benchmark, `arg` is passed to every call of `fn` as is.
 * The configuration functions return their first argument so that they
 * can be nested, and map one to one to the C++ methods of the same name
 * (Arg, Args, Range, RangeMultiplier, DenseRange, ArgsProduct, ArgName(s),
 * Threads, ThreadRange, DenseThreadRange, UseRealTime, UseManualTime,
 * MinTime, MinWarmUpTime, Iterations, Repetitions, Unit, ...).  Without
 * arguments a benchmark runs once, with no range.
 *
 * Inside a benchmark function:
 *
 *   - The timed loop.  GB_FOR(st, i) { body } runs the body
 *     gb_max_iterations(st) times with the clock running, `i` counting from
 *     0 (an int64_t).  It costs no function call per iteration: it is Google
 *     Benchmark's KeepRunningBatch() with the whole batch, the same as C++'s
 *     "for (auto _ : state)".  Do not `break` out of it (the iterations
 *     count as done anyway), and call it once per invocation.  The
 *     alternatives are gb_keep_running(st) (one call per iteration, as
 *     KeepRunning()) and gb_keep_running_batch(st, n), where the last batch
 *     may overshoot.  Code before the loop is set-up, code after it
 *     tear-down; neither is timed.
 *   - gb_pause(st) / gb_resume(st) stop and restart the clock inside the
 *     loop (they cost about a microsecond: use them around work much longer
 *     than that).  With gb_use_manual_time() the clock is yours: report each
 *     batch's duration with gb_set_iteration_time(st, seconds).
 *   - gb_set_items_processed(), gb_set_bytes_processed(): items_per_second /
 *     bytes_per_second in the report.
 *   - gb_counter_set(st, "name", value, flags): a user counter; flags as
 *     Google Benchmark's Counter::Flags (GB_COUNTER_RATE: divided by the
 *     time, GB_COUNTER_AVG_THREADS: divided by the thread count, ...).
 *   - gb_skip_with_error(st, "why"): the run is reported as an error and
 *     the loop does not start (or stops at its next check).
 *
 * Threads.  With gb_threads(b, n) or gb_thread_range(b, lo, hi) the
 * function runs concurrently in n threads, each with its own gb_state
 * (gb_state_thread_index() is 0..n-1; thread 0 is the thread that called
 * gb_main()).  Every thread must run the loop; the clock starts when all of
 * them have entered it and stops when all have left it (barriers), so code
 * that thread 0 runs before its loop happens-before every thread's loop, and
 * code after the loop runs after all threads' loops.  Each thread runs
 * gb_max_iterations(st) iterations; counters and items are summed over the
 * threads.  Use gb_use_real_time() for threaded benchmarks: the default is
 * the CPU time of the threads, which hides waiting.
 *
 * Contracts: registration functions must be called before gb_main() (or
 * gb_initialize()), from one thread.  The gb_state functions may only be
 * called by the thread that received that gb_state, during the call.
 * None of this is async-signal-safe.
 *
 * Google Benchmark's notes apply: a "library_build_type": "debug" in the
 * JSON context describes how the harness library was compiled (Debian's
 * libbenchmark 1.7.1 reports "debug"), not the code under test.
 */
#ifndef GBENCH_H
#define GBENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gb_state gb_state;    /* a benchmark::State, one per thread and run */
typedef struct gb_bench gb_bench;    /* a registered benchmark::internal::Benchmark */
typedef void (*gb_fn)(gb_state *st, void *arg);

/* ------------------------------------------------------------ registration -- */

/* Registers `fn` under `name`; `arg` is handed to each call.  NULL on failure. */
gb_bench *gb_register(const char *name, gb_fn fn, void *arg);

gb_bench *gb_arg(gb_bench *b, int64_t x);                       /* Arg(x): one more run   */
gb_bench *gb_args(gb_bench *b, const int64_t *xs, size_t n);    /* Args({...}): one tuple */
gb_bench *gb_range(gb_bench *b, int64_t lo, int64_t hi);        /* lo, lo*m, ..., hi      */
gb_bench *gb_range_multiplier(gb_bench *b, int m);              /* m for gb_range (8)     */
gb_bench *gb_dense_range(gb_bench *b, int64_t lo, int64_t hi, int step);
/* The cartesian product of `nlists` lists; list k has lens[k] values. */
gb_bench *gb_args_product(gb_bench *b, const int64_t *const *lists, const size_t *lens,
                          size_t nlists);
gb_bench *gb_arg_name(gb_bench *b, const char *name);           /* "name:value" in names  */
gb_bench *gb_arg_names(gb_bench *b, const char *const *names, size_t n);
gb_bench *gb_threads(gb_bench *b, int n);                       /* one more run, n threads */
gb_bench *gb_thread_range(gb_bench *b, int lo, int hi);         /* lo, 2lo, ..., hi        */
gb_bench *gb_dense_thread_range(gb_bench *b, int lo, int hi, int stride);
gb_bench *gb_use_real_time(gb_bench *b);                        /* wall clock, not CPU     */
gb_bench *gb_use_manual_time(gb_bench *b);                      /* gb_set_iteration_time() */
gb_bench *gb_measure_process_cpu_time(gb_bench *b);
gb_bench *gb_min_time(gb_bench *b, double seconds);
gb_bench *gb_min_warmup_time(gb_bench *b, double seconds);
gb_bench *gb_iterations(gb_bench *b, int64_t n);                /* fixed count, no tuning  */
gb_bench *gb_repetitions(gb_bench *b, int n);

enum gb_time_unit { GB_NS, GB_US, GB_MS, GB_S };
gb_bench *gb_unit(gb_bench *b, enum gb_time_unit unit);

/* --------------------------------------------------------- inside the run -- */

bool gb_keep_running(gb_state *st);
bool gb_keep_running_batch(gb_state *st, int64_t n);
int64_t gb_max_iterations(const gb_state *st);   /* the iterations this run asks for */
int64_t gb_state_iterations(const gb_state *st); /* iterations done so far by this thread */
int64_t gb_state_range(const gb_state *st, size_t pos);
int gb_state_threads(const gb_state *st);
int gb_state_thread_index(const gb_state *st);

void gb_pause(gb_state *st);
void gb_resume(gb_state *st);
void gb_set_iteration_time(gb_state *st, double seconds);
void gb_skip_with_error(gb_state *st, const char *msg);
bool gb_error_occurred(const gb_state *st);

void gb_set_items_processed(gb_state *st, int64_t items);
void gb_set_bytes_processed(gb_state *st, int64_t bytes);
void gb_set_label(gb_state *st, const char *label);

/* benchmark::Counter::Flags, same values; combine with |. */
#define GB_COUNTER_DEFAULT        0x0u        /* as set, summed over threads          */
#define GB_COUNTER_RATE           0x1u        /* divided by the run's time            */
#define GB_COUNTER_AVG_THREADS    0x2u        /* divided by the number of threads     */
#define GB_COUNTER_ITER_INVARIANT 0x4u        /* multiplied by the iterations         */
#define GB_COUNTER_AVG_ITERATIONS 0x8u        /* divided by the iterations            */
#define GB_COUNTER_INVERT         0x80000000u /* 1/x, applied last                    */
/* Sets (replaces) user counter `name` of this thread's state. */
void gb_counter_set(gb_state *st, const char *name, double value, unsigned flags);

/*
 * The loop.  `i` is declared by the macro.  Equivalent to C++
 * "for (auto _ : state)": the clock runs from the first test to the last.
 */
#define GB_FOR(st, i)                                                              \
	for (int64_t gb_n_ = gb_max_iterations(st); gb_keep_running_batch((st), gb_n_);) \
		for (int64_t i = 0; i < gb_n_; i++)

/* ------------------------------------------------------------------ running -- */

/* benchmark::Initialize + ReportUnrecognizedArguments + RunSpecifiedBenchmarks
 * + Shutdown.  Returns 0, or 1 for an unknown argument. */
int gb_main(int argc, char **argv);
/* The same in pieces: removes the --benchmark_* flags it knows from argv. */
void gb_initialize(int *argc, char **argv);
bool gb_report_unrecognized_arguments(int argc, char **argv);
size_t gb_run_specified_benchmarks(void);
void gb_shutdown(void);
/* A key/value pair for the "context" of the report (before running). */
void gb_add_custom_context(const char *key, const char *value);

/* -------------------------------------------------------------- optimiser -- */

/*
 * The compiler must treat `p` (and what it points to) as used: an
 * allocation whose result only reaches gb_do_not_optimize() cannot be
 * removed together with its free().  Same as benchmark::DoNotOptimize.
 */
static inline void gb_do_not_optimize(const void *p)
{
#if defined(__GNUC__)
	__asm__ volatile("" : : "r"(p) : "memory");
#else
	static const void *volatile sink;
	sink = p;
#endif
}

/* All memory may have been read and written: benchmark::ClobberMemory. */
static inline void gb_clobber_memory(void)
{
#if defined(__GNUC__)
	__asm__ volatile("" : : : "memory");
#endif
}

#ifdef __cplusplus
}
#endif
#endif /* GBENCH_H */
