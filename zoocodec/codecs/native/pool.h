// A small persistent thread pool shared by every coder in the native engine.
// parallel_for(n, threads, fn) runs fn(i) for i in [0, n) on up to `threads` threads
// (the calling thread is one of them) and returns when all are done; the first
// exception thrown by fn is rethrown in the caller. Jobs from concurrent callers run
// one after another. Call it with the GIL released.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>

namespace zc {

// Threads used when a caller passes threads <= 0: ZOOCODEC_THREADS if set, else the
// machine's hardware threads.
int default_threads();

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn);

// One more thread for another thread's parallel_for calls: the thread that runs them passes
// the Helper to parallel_for, and a thread in help() takes items of each of them (beside the
// `threads` it asks for) until close(). plan.h's Pass: the Python caller, its own work done,
// joins the decoding pass that started while it worked.
class Helper {
 public:
  Helper();
  void help();   // take items of every parallel_for given this Helper, until close()
  void close();  // help() returns once the items it holds are done
  struct State;

 private:
  friend void parallel_for(std::size_t, int, const std::function<void(std::size_t)>&, Helper*);
  std::shared_ptr<State> state_;
};

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn, Helper* helper);

}  // namespace zc
