// parallel_items (parallel_items.h): the two ways of sharing items, and the choice between them.
#include "parallel_items.h"

#include <ATen/Parallel.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cfenv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

namespace muse {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Gives a team thread the caller's floating-point environment for a while, then its own back.
class FenvGuard {
 public:
  explicit FenvGuard(const std::fenv_t& env) {
    std::fegetenv(&own_);
    std::fesetenv(&env);
  }
  ~FenvGuard() { std::fesetenv(&own_); }
  FenvGuard(const FenvGuard&) = delete;
  FenvGuard& operator=(const FenvGuard&) = delete;

 private:
  std::fenv_t own_;
};

// --- The OpenMP team ---------------------------------------------------------------------------------

// Runs the items on torch's OpenMP team (at::parallel_for), each thread taking the next item from a
// shared counter. Returns whether the caller waited for the team: more than 1 ms plus two of its own
// items between entering the region and starting its first item (a team thread late at the start
// barrier) or between running out of items and leaving the region (a team thread late to finish).
bool run_on_openmp_team(int64_t n_items, int helpers, void (*run_item)(const void*, int64_t), const void* context) {
  std::fenv_t env;
  std::fegetenv(&env);
  std::atomic<int64_t> next{0};
  int64_t caller_start = 0, caller_end = 0, caller_longest = 0;
  const int64_t entered = now_ns();
  at::parallel_for(0, helpers + 1, 1, [&](int64_t worker, int64_t) {
    const bool caller = worker == 0;  // the region's master thread runs chunk 0
    if (caller) caller_start = now_ns();
    auto take_items = [&] {
      for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n_items;
           i = next.fetch_add(1, std::memory_order_relaxed)) {
        const int64_t start = caller ? now_ns() : 0;
        run_item(context, i);
        if (caller) caller_longest = std::max(caller_longest, now_ns() - start);
      }
    };
    if (caller) {
      take_items();
      caller_end = now_ns();
    } else {
      FenvGuard guard(env);
      take_items();
    }
  });
  const int64_t waited = (caller_start - entered) + (now_ns() - caller_end);
  return waited > 1000000 + 2 * caller_longest;
}

// --- Our own helpers ---------------------------------------------------------------------------------

// One call of run_on_helpers. Shared (std::shared_ptr) with the helpers: one that wakes after the call
// has returned still reads the counters, finds no item left and goes back to sleep. `context` is only
// touched for an item taken, and the call waits for every item taken.
struct Job {
  int64_t n_items = 0;
  int helpers = 0;
  void (*run_item)(const void*, int64_t) = nullptr;
  const void* context = nullptr;
  std::fenv_t fenv{};

  std::atomic<int64_t> next{0};  // the next item to take
  std::atomic<int64_t> done{0};  // items finished
  std::atomic<int> joined{0};    // helpers that came
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first exception, written by whoever set `failed`

  // Takes items until there are none left.
  void work() {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n_items;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      try {
        run_item(context, i);
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
      // Release: the caller's acquire of the last count sees every item's writes.
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == n_items) done.notify_all();
    }
  }
};

// Helper threads, started on demand (one fewer than the most threads a call has asked for) and kept
// for the life of the process. Idle ones sleep in a futex wait on `offers_`.
class Pool {
 public:
  // This process's pool. A child of fork() has none of its parent's threads: it starts a new pool
  // (the parent's object is leaked; its mutex may have been held by a thread that is gone).
  static Pool& get() {
    static const bool registered = [] {
      pthread_atfork(nullptr, nullptr, [] { current_.store(new Pool(), std::memory_order_release); });
      current_.store(new Pool(), std::memory_order_release);
      return true;
    }();
    (void)registered;
    return *current_.load(std::memory_order_acquire);
  }

  // Wakes up to job->helpers helpers, starting threads if there are fewer. Offers nothing when another
  // call is offering its job at that moment, or a helper is reading one: the caller then does all the
  // items itself, rather than wait on a lock a descheduled thread may hold.
  void offer(const std::shared_ptr<Job>& job) {
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    job_ = job;
    const uint32_t offers = offers_.load(std::memory_order_relaxed);
    while (threads_ < job->helpers) {
      try {
        std::thread(&Pool::helper, this, offers).detach();
      } catch (const std::system_error&) {
        break;  // no more threads: fewer helpers
      }
      ++threads_;
    }
    offers_.store(offers + 1, std::memory_order_release);
    // One wake-up a helper wanted, not all: the pool keeps the most threads ever asked for.
    for (int i = 0; i < job->helpers; ++i) offers_.notify_one();
  }

 private:
  Pool() = default;

  void helper(uint32_t seen) {
    pthread_setname_np(pthread_self(), "muse-scan");
    for (;;) {
      offers_.wait(seen, std::memory_order_acquire);
      seen = offers_.load(std::memory_order_acquire);
      std::shared_ptr<Job> job;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        job = job_;
      }
      if (!job || job->joined.fetch_add(1, std::memory_order_relaxed) >= job->helpers) continue;
      std::fesetenv(&job->fenv);
      job->work();
    }
  }

  static inline std::atomic<Pool*> current_{nullptr};
  std::mutex mutex_;          // guards job_ and threads_
  std::shared_ptr<Job> job_;  // the last job offered
  int threads_ = 0;
  std::atomic<uint32_t> offers_{0};  // jobs offered so far
};

// Runs the items on the calling thread and on helpers of the pool that get a core in time; waits only
// for items a helper has taken.
void run_on_helpers(int64_t n_items, int helpers, void (*run_item)(const void*, int64_t), const void* context) {
  auto job = std::make_shared<Job>();
  job->n_items = n_items;
  job->helpers = helpers;
  job->run_item = run_item;
  job->context = context;
  std::fegetenv(&job->fenv);
  Pool::get().offer(job);
  job->work();
  // Items a helper still holds: spin a little (one item is ~0.1 ms at the MUSE shape, a futex wake
  // costs tens of us), then sleep, which leaves this core to the helper if it was the one descheduled.
  const int64_t spin_until = now_ns() + 50000;
  int64_t done = job->done.load(std::memory_order_acquire);
  while (done < n_items && now_ns() < spin_until) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    done = job->done.load(std::memory_order_acquire);
  }
  while (done < n_items) {
    job->done.wait(done, std::memory_order_acquire);
    done = job->done.load(std::memory_order_acquire);
  }
  if (job->failed.load(std::memory_order_acquire)) std::rethrow_exception(job->error);
}

// --- The choice --------------------------------------------------------------------------------------

enum class Mode { kAuto, kOpenMP, kHelpers };

// MUSE_SCAN_CPU_THREADS=openmp|helpers forces one way (tests and benchmarks); anything else is auto.
Mode mode_from_env() {
  const char* env = std::getenv("MUSE_SCAN_CPU_THREADS");
  if (env != nullptr && std::strcmp(env, "openmp") == 0) return Mode::kOpenMP;
  if (env != nullptr && std::strcmp(env, "helpers") == 0) return Mode::kHelpers;
  return Mode::kAuto;
}

// Auto: after two calls in a row that waited for the team, the helpers for `skip_ns`: 1 s at first,
// doubled at each such ban (up to 16 s), halved at each call on the team that did not wait. Two, not
// one: a burst of another process stalls one call, and a second on the helpers costs more than that
// when the team's threads spin (inside a model). Halved, not reset: on a machine that stays busy the
// team keeps up now and then, and each stall costs a scheduler tick or more. Concurrent calls race on
// these, which only blurs the memory.
constexpr int64_t kFirstSkipNs = 1000000000;
constexpr int64_t kLongestSkipNs = 16 * kFirstSkipNs;
std::atomic<int64_t> skip_until_ns{0};  // steady clock
std::atomic<int64_t> skip_ns{kFirstSkipNs};
std::atomic<int> stalls_in_a_row{0};

std::atomic<int64_t> calls_openmp{0}, calls_helpers{0}, openmp_stalls{0};

void remember(bool stalled) {
  if (!stalled) {
    stalls_in_a_row.store(0);
    skip_ns.store(std::max(skip_ns.load() / 2, kFirstSkipNs));
    return;
  }
  openmp_stalls.fetch_add(1, std::memory_order_relaxed);
  if (stalls_in_a_row.fetch_add(1) + 1 < 2) return;
  stalls_in_a_row.store(0);
  const int64_t skip = skip_ns.load();
  skip_until_ns.store(now_ns() + skip);
  skip_ns.store(std::min(2 * skip, kLongestSkipNs));
}

}  // namespace

void parallel_items(int64_t n_items, int helpers, void (*run_item)(const void*, int64_t), const void* context) {
  if (n_items <= 0) return;
  if (helpers <= 0 || n_items == 1) {
    for (int64_t i = 0; i < n_items; ++i) run_item(context, i);
    return;
  }
  const Mode mode = mode_from_env();
  if (mode == Mode::kOpenMP || (mode == Mode::kAuto && now_ns() >= skip_until_ns.load())) {
    calls_openmp.fetch_add(1, std::memory_order_relaxed);
    const bool stalled = run_on_openmp_team(n_items, helpers, run_item, context);
    if (mode == Mode::kAuto) remember(stalled);
    return;
  }
  calls_helpers.fetch_add(1, std::memory_order_relaxed);
  run_on_helpers(n_items, helpers, run_item, context);
}

ThreadingStats threading_stats() {
  return {calls_openmp.load(), calls_helpers.load(), openmp_stalls.load()};
}

}  // namespace muse
