// Work sharing for the scan kernel: items taken one at a time from a shared counter, by the calling
// thread and by helper threads that join when they get a core.
//
// Why not at::parallel_for: with torch's OpenMP backend it splits the range statically, and every
// OpenMP region ends (and, with threads parked in the pool, starts) at a barrier that waits for all
// the team's threads. When another process takes a team thread's core, the call waits until that
// thread gets a core back; and libgomp's threads spin while they wait, so nobody yields and the wait
// lasts until the next scheduler tick (4 ms here). At the MUSE shape the op took 24 ms on 2 threads
// next to two busy processes against 4-8 ms on 1 thread (docs/benchmarks.md). Here the caller never
// waits for a helper that has not started: it takes the items itself, and waits (asleep, leaving its
// core to others) only for items a helper has taken and not finished.
#pragma once

#include <cstdint>

namespace muse {

// Calls run_item(context, i) once for every i in [0, n_items), on the calling thread and on up to
// `helpers` helper threads, and returns when all calls have returned. Items must be independent. The
// helpers run with the caller's floating-point control word (rounding, flush-to-zero), so an item
// computes the same bits whichever thread runs it. Exceptions thrown by run_item are rethrown here.
void parallel_items(int64_t n_items, int helpers, void (*run_item)(const void* context, int64_t i),
                    const void* context);

template <typename F>
void parallel_items(int64_t n_items, int helpers, const F& run_item) {
  parallel_items(
      n_items, helpers, [](const void* f, int64_t i) { (*static_cast<const F*>(f))(i); }, &run_item);
}

}  // namespace muse
