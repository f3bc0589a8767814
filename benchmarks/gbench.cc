// gbench.cc - the C interface of gbench.h over Google Benchmark.
//
// Every function is a one-line forward to the C++ API; see gbench.h for the
// contracts.  gb_state and gb_bench are never defined: a gb_state * is a
// benchmark::State *, a gb_bench * a benchmark::internal::Benchmark *, cast
// back here.  Nothing may throw into C: the only C++ operations that can
// throw are allocations inside Google Benchmark (std::bad_alloc), which
// terminate the program as they would in a C++ benchmark.
#include "gbench.h"

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

namespace {

using benchmark::State;
using benchmark::internal::Benchmark;

inline State *S(gb_state *st) { return reinterpret_cast<State *>(st); }
inline const State *S(const gb_state *st) { return reinterpret_cast<const State *>(st); }
inline Benchmark *B(gb_bench *b) { return reinterpret_cast<Benchmark *>(b); }
inline gb_bench *C(Benchmark *b) { return reinterpret_cast<gb_bench *>(b); }

static_assert(GB_COUNTER_RATE == benchmark::Counter::kIsRate, "counter flags");
static_assert(GB_COUNTER_AVG_THREADS == benchmark::Counter::kAvgThreads, "counter flags");
static_assert(GB_COUNTER_ITER_INVARIANT == benchmark::Counter::kIsIterationInvariant,
              "counter flags");
static_assert(GB_COUNTER_AVG_ITERATIONS == benchmark::Counter::kAvgIterations, "counter flags");
static_assert(GB_COUNTER_INVERT == static_cast<unsigned>(benchmark::Counter::kInvert),
              "counter flags");

}  // namespace

extern "C" {

// ------------------------------------------------------------- registration --

gb_bench *gb_register(const char *name, gb_fn fn, void *arg)
{
	if (!name || !fn)
		return nullptr;
	// 1.7.1: RegisterBenchmark(const char *, Lambda&&); the lambda is copied
	// into the Benchmark object, so capturing by value is all it needs.
	return C(benchmark::RegisterBenchmark(
		name, [fn, arg](State &st) { fn(reinterpret_cast<gb_state *>(&st), arg); }));
}

gb_bench *gb_arg(gb_bench *b, int64_t x) { return C(B(b)->Arg(x)); }

gb_bench *gb_args(gb_bench *b, const int64_t *xs, size_t n)
{
	return C(B(b)->Args(std::vector<int64_t>(xs, xs + n)));
}

gb_bench *gb_range(gb_bench *b, int64_t lo, int64_t hi) { return C(B(b)->Range(lo, hi)); }
gb_bench *gb_range_multiplier(gb_bench *b, int m) { return C(B(b)->RangeMultiplier(m)); }

gb_bench *gb_dense_range(gb_bench *b, int64_t lo, int64_t hi, int step)
{
	return C(B(b)->DenseRange(lo, hi, step));
}

gb_bench *gb_args_product(gb_bench *b, const int64_t *const *lists, const size_t *lens,
                          size_t nlists)
{
	std::vector<std::vector<int64_t>> v;
	for (size_t k = 0; k < nlists; k++)
		v.emplace_back(lists[k], lists[k] + lens[k]);
	return C(B(b)->ArgsProduct(v));
}

gb_bench *gb_arg_name(gb_bench *b, const char *name) { return C(B(b)->ArgName(name)); }

gb_bench *gb_arg_names(gb_bench *b, const char *const *names, size_t n)
{
	return C(B(b)->ArgNames(std::vector<std::string>(names, names + n)));
}

gb_bench *gb_threads(gb_bench *b, int n) { return C(B(b)->Threads(n)); }
gb_bench *gb_thread_range(gb_bench *b, int lo, int hi) { return C(B(b)->ThreadRange(lo, hi)); }

gb_bench *gb_dense_thread_range(gb_bench *b, int lo, int hi, int stride)
{
	return C(B(b)->DenseThreadRange(lo, hi, stride));
}

gb_bench *gb_use_real_time(gb_bench *b) { return C(B(b)->UseRealTime()); }
gb_bench *gb_use_manual_time(gb_bench *b) { return C(B(b)->UseManualTime()); }
gb_bench *gb_measure_process_cpu_time(gb_bench *b) { return C(B(b)->MeasureProcessCPUTime()); }
gb_bench *gb_min_time(gb_bench *b, double seconds) { return C(B(b)->MinTime(seconds)); }
gb_bench *gb_min_warmup_time(gb_bench *b, double s) { return C(B(b)->MinWarmUpTime(s)); }
gb_bench *gb_iterations(gb_bench *b, int64_t n) { return C(B(b)->Iterations(n)); }
gb_bench *gb_repetitions(gb_bench *b, int n) { return C(B(b)->Repetitions(n)); }

gb_bench *gb_unit(gb_bench *b, enum gb_time_unit unit)
{
	static const benchmark::TimeUnit map[] = { benchmark::kNanosecond, benchmark::kMicrosecond,
		                                   benchmark::kMillisecond, benchmark::kSecond };
	return C(B(b)->Unit(map[unit <= GB_S ? unit : GB_NS]));
}

// ----------------------------------------------------------- inside the run --

bool gb_keep_running(gb_state *st) { return S(st)->KeepRunning(); }
bool gb_keep_running_batch(gb_state *st, int64_t n) { return S(st)->KeepRunningBatch(n); }
int64_t gb_max_iterations(const gb_state *st) { return S(st)->max_iterations; }
int64_t gb_state_iterations(const gb_state *st) { return S(st)->iterations(); }
int64_t gb_state_range(const gb_state *st, size_t pos) { return S(st)->range(pos); }
int gb_state_threads(const gb_state *st) { return S(st)->threads(); }
int gb_state_thread_index(const gb_state *st) { return S(st)->thread_index(); }

void gb_pause(gb_state *st) { S(st)->PauseTiming(); }
void gb_resume(gb_state *st) { S(st)->ResumeTiming(); }
void gb_set_iteration_time(gb_state *st, double s) { S(st)->SetIterationTime(s); }
void gb_skip_with_error(gb_state *st, const char *msg) { S(st)->SkipWithError(msg); }
bool gb_error_occurred(const gb_state *st) { return S(st)->error_occurred(); }

void gb_set_items_processed(gb_state *st, int64_t n) { S(st)->SetItemsProcessed(n); }
void gb_set_bytes_processed(gb_state *st, int64_t n) { S(st)->SetBytesProcessed(n); }
void gb_set_label(gb_state *st, const char *label) { S(st)->SetLabel(label); }

void gb_counter_set(gb_state *st, const char *name, double value, unsigned flags)
{
	S(st)->counters[name] = benchmark::Counter(value,
	                                           static_cast<benchmark::Counter::Flags>(flags));
}

// ------------------------------------------------------------------ running --

void gb_initialize(int *argc, char **argv) { benchmark::Initialize(argc, argv); }

bool gb_report_unrecognized_arguments(int argc, char **argv)
{
	return benchmark::ReportUnrecognizedArguments(argc, argv);
}

size_t gb_run_specified_benchmarks(void) { return benchmark::RunSpecifiedBenchmarks(); }
void gb_shutdown(void) { benchmark::Shutdown(); }

void gb_add_custom_context(const char *key, const char *value)
{
	benchmark::AddCustomContext(key, value);
}

int gb_main(int argc, char **argv)
{
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}

}  // extern "C"
