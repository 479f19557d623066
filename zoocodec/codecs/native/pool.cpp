#include "pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace zc {

int default_threads() {
  if (const char* env = std::getenv("ZOOCODEC_THREADS")) {
    int t = std::atoi(env);
    if (t > 0) return std::min(t, 256);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

// One parallel_for call. Helpers that wake late hold it by shared_ptr, find every item
// taken and leave; the caller waits for its items, never for sleeping helpers.
struct Job {
  const std::function<void(std::size_t)>* fn;
  std::size_t n;
  std::atomic<std::size_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex m;
  std::condition_variable finished;

  void work() {
    for (;;) {
      std::size_t i = next.fetch_add(1);
      if (i >= n) return;
      if (!failed.load()) {
        try {
          (*fn)(i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(m);
          if (!error) error = std::current_exception();
          failed.store(true);
        }
      }
      if (done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(m);
        finished.notify_all();
      }
    }
  }
};

class Pool {
 public:
  void run(std::size_t n, int threads, const std::function<void(std::size_t)>& fn) {
    std::lock_guard<std::mutex> submit(submit_);
    int helpers = static_cast<int>(std::min<std::size_t>(threads - 1, n - 1));
    while (started_ < helpers) {
      std::thread(&Pool::loop, this, started_++).detach();
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->n = n;
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = job;
      helpers_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    job->work();
    {
      std::unique_lock<std::mutex> lock(job->m);
      job->finished.wait(lock, [&] { return job->done.load() == n; });
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      job_.reset();
    }
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  // Worker `id` joins a job when id < the job's helper count.
  void loop(int id) {
    unsigned long seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return generation_ != seen && id < helpers_; });
        seen = generation_;
        job = job_;
      }
      if (job) job->work();
    }
  }

  std::mutex submit_, m_;
  std::condition_variable wake_;
  std::shared_ptr<Job> job_;
  int started_ = 0, helpers_ = 0;
  unsigned long generation_ = 0;
};

}  // namespace

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn) {
  if (n == 0) return;
  if (threads <= 0) threads = default_threads();
  if (threads == 1 || n == 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  static Pool* pool = new Pool();  // never destroyed: workers may outlive interpreter teardown
  pool->run(n, threads, fn);
}

}  // namespace zc
