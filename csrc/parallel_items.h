// Work sharing for the scan kernel: items taken one at a time from a shared counter by the calling
// thread and other threads, either torch's OpenMP team or helper threads of our own.
//
// Why not at::parallel_for's static split alone: with torch's OpenMP backend every region starts and
// ends at barriers that wait, spinning, for every thread of the team. When another process takes a
// team thread's core, the call waits until that thread gets a core back; and as the waiting threads
// spin, nobody yields, so the wait lasts until a scheduler tick (4 ms here). At the MUSE shape the op
// took 24 ms on 2 threads next to two busy processes against 8 ms on 1 thread (docs/benchmarks.md).
//
// The two ways:
// - OpenMP team: at::parallel_for over the threads, each taking items from the counter. Best on an idle
//   machine: after any torch op the team's threads spin for a few ms, ready at once (and our own
//   threads would have to wait for those cores).
// - Helpers: the caller takes items itself, and wakes helper threads (asleep on a futex) that take
//   items too when they get a core; it never waits for a helper that has not started, and waits
//   (spinning 50 us, then asleep, leaving its core) only for items a helper has taken.
// Auto (the default) uses the team until two calls in a row wait for it (more than ~1 ms beyond their
// own items: a team thread was descheduled), then the helpers for a while: 1 s at first, doubled at
// each such switch (up to 16 s), halved at each call on the team that did not wait.
// MUSE_SCAN_CPU_THREADS=openmp|helpers forces one way.
#pragma once

#include <cstdint>

namespace muse {

// Calls run_item(context, i) once for every i in [0, n_items), on the calling thread and on up to
// `helpers` other threads, and returns when all calls have returned. Items must be independent. The
// other threads run them with the caller's floating-point environment (rounding, flush-to-zero), so an
// item computes the same bits whichever thread runs it. An exception thrown by run_item is rethrown.
void parallel_items(int64_t n_items, int helpers, void (*run_item)(const void* context, int64_t i),
                    const void* context);

template <typename F>
void parallel_items(int64_t n_items, int helpers, const F& run_item) {
  parallel_items(
      n_items, helpers, [](const void* f, int64_t i) { (*static_cast<const F*>(f))(i); }, &run_item);
}

// Calls of parallel_items on several threads, by the way they ran, and the calls on the team that
// waited for it (auto mode).
struct ThreadingStats {
  int64_t openmp_calls, helper_calls, openmp_stalls;
};
ThreadingStats threading_stats();

}  // namespace muse
