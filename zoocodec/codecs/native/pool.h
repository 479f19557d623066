// A small persistent thread pool shared by every coder in the native engine.
// parallel_for(n, threads, fn) runs fn(i) for i in [0, n) on up to `threads` threads
// (the calling thread is one of them) and returns when all are done; the first
// exception thrown by fn is rethrown in the caller. Jobs from concurrent callers run
// one after another. Call it with the GIL released.
#pragma once
#include <cstddef>
#include <functional>

namespace zc {

// Threads used when a caller passes threads <= 0: ZOOCODEC_THREADS if set, else the
// machine's hardware threads.
int default_threads();

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn);

}  // namespace zc
