#include "pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
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

class Pool {
 public:
  void run(std::size_t n, int threads, const std::function<void(std::size_t)>& fn) {
    std::lock_guard<std::mutex> submit(submit_);
    int helpers = static_cast<int>(std::min<std::size_t>(threads - 1, n - 1));
    while (static_cast<int>(workers_.size()) < helpers) {
      int id = static_cast<int>(workers_.size());
      std::thread(&Pool::loop, this, id).detach();
      workers_.push_back(id);
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      fn_ = &fn;
      n_ = n;
      next_.store(0);
      helpers_ = active_ = helpers;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [&] { return active_ == 0; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Worker `id` joins a job when id < the job's helper count.
  void loop(int id) {
    unsigned long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return generation_ != seen && id < helpers_; });
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lock(m_);
      if (--active_ == 0) done_.notify_all();
    }
  }

  void work() {
    for (;;) {
      std::size_t i = next_.fetch_add(1);
      if (i >= n_) return;
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_);
      }
    }
  }

  std::mutex submit_, m_;
  std::condition_variable wake_, done_;
  std::vector<int> workers_;
  const std::function<void(std::size_t)>* fn_ = nullptr;
  std::size_t n_ = 0;
  std::atomic<std::size_t> next_{0};
  int helpers_ = 0, active_ = 0;
  unsigned long generation_ = 0;
  std::exception_ptr error_;
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
