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

  // The caller's share, then wait for the items other threads hold.
  void finish() {
    work();
    std::unique_lock<std::mutex> lock(m);
    finished.wait(lock, [&] { return done.load() == n; });
  }
};

class Pool {
 public:
  void run(std::size_t n, int threads, const std::function<void(std::size_t)>& fn) {
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->n = n;
    run(job, static_cast<int>(std::min<std::size_t>(threads - 1, n - 1)));
    if (job->error) std::rethrow_exception(job->error);
  }

  // `job` on `helpers` threads of the pool and the caller's.
  void run(const std::shared_ptr<Job>& job, int helpers) {
    std::lock_guard<std::mutex> submit(submit_);
    while (started_ < helpers) {
      std::thread(&Pool::loop, this, started_++).detach();
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = job;
      helpers_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    job->finish();
    {
      std::lock_guard<std::mutex> lock(m_);
      job_.reset();
    }
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

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive interpreter teardown
  return *p;
}

}  // namespace

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn) {
  if (n == 0) return;
  if (threads <= 0) threads = default_threads();
  if (threads == 1 || n == 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  pool().run(n, threads, fn);
}

struct Helper::State {
  std::mutex m;
  std::condition_variable wake;
  std::shared_ptr<Job> job;  // the parallel_for running now, if any
  unsigned long generation = 0;
  bool closed = false;

  void publish(std::shared_ptr<Job> j) {
    {
      std::lock_guard<std::mutex> lock(m);
      job = std::move(j);
      ++generation;
    }
    wake.notify_all();
  }
};

Helper::Helper() : state_(std::make_shared<State>()) {}

void Helper::help() {
  State& s = *state_;
  unsigned long seen = 0;
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(s.m);
      s.wake.wait(lock, [&] { return s.closed || (s.job && s.generation != seen); });
      if (s.closed) return;
      seen = s.generation;
      job = s.job;
    }
    job->work();  // (a job already done: every item taken, it returns at once)
  }
}

void Helper::close() {
  {
    std::lock_guard<std::mutex> lock(state_->m);
    state_->closed = true;
  }
  state_->wake.notify_all();
}

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn, Helper* helper) {
  if (!helper) return parallel_for(n, threads, fn);
  if (n == 0) return;
  if (threads <= 0) threads = default_threads();
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  helper->state_->publish(job);
  if (threads > 1 && n > 1) pool().run(job, static_cast<int>(std::min<std::size_t>(threads - 1, n - 1)));
  else job->finish();
  helper->state_->publish(nullptr);
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace zc
