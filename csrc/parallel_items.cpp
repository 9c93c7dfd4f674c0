// parallel_items (parallel_items.h): a job's shared counters, and a pool of helper threads that sleep
// until a job is offered.
#include "parallel_items.h"

#include <pthread.h>

#include <atomic>
#include <cfenv>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

namespace muse {
namespace {

// One call of parallel_items. Shared (std::shared_ptr) with the helpers: one that wakes after the
// call has returned still reads the counters, finds no item left and goes back to sleep. `context` is
// only touched for an item taken, and the call waits for every item taken.
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

}  // namespace

void parallel_items(int64_t n_items, int helpers, void (*run_item)(const void*, int64_t), const void* context) {
  if (n_items <= 0) return;
  if (helpers <= 0 || n_items == 1) {
    for (int64_t i = 0; i < n_items; ++i) run_item(context, i);
    return;
  }
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
  const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  int64_t done = job->done.load(std::memory_order_acquire);
  while (done < n_items && std::chrono::steady_clock::now() < spin_until) {
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

}  // namespace muse
