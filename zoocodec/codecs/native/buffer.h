// Python-facing helpers: a read-only view of any bytes-like object, and output
// arrays/bytes the bindings hand back.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "bytes.h"

namespace zc {

namespace nb = nanobind;

// Holds a contiguous read-only buffer (bytes, bytearray, memoryview, ndarray) while alive.
class InBuffer {
 public:
  explicit InBuffer(nb::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) throw nb::python_error();
  }
  ~InBuffer() { PyBuffer_Release(&view_); }
  InBuffer(const InBuffer&) = delete;
  InBuffer& operator=(const InBuffer&) = delete;
  const uint8_t* data() const { return static_cast<const uint8_t*>(view_.buf); }
  std::size_t size() const { return static_cast<std::size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

template <class T>
using Array1 = nb::ndarray<nb::numpy, T, nb::ndim<1>>;

// A new 1-D NumPy array of n elements that owns its memory.
template <class T>
Array1<T> new_array(std::size_t n, T** data) {
  T* p = new T[n ? n : 1];
  nb::capsule owner(p, [](void* q) noexcept { delete[] static_cast<T*>(q); });
  *data = p;
  return Array1<T>(p, {n}, owner);
}

// A new 1-D NumPy array like new_array, on transparent huge pages when it spans a few of
// them: faulting in a fresh 90 MB output page by page cost more than decoding it (NumPy
// asks for huge pages the same way, from 4 MB on).
template <class T>
Array1<T> big_array(std::size_t n, T** data) {
  constexpr std::size_t HUGE = std::size_t(1) << 21;
  const std::size_t bytes = n * sizeof(T);
  if (bytes < 2 * HUGE) return new_array<T>(n, data);
  const std::size_t rounded = (bytes + HUGE - 1) / HUGE * HUGE;
  void* p = std::aligned_alloc(HUGE, rounded);
  if (!p) throw std::bad_alloc();
#ifdef __linux__
  madvise(p, rounded, MADV_HUGEPAGE);  // advice only: a refusal leaves ordinary pages
#endif
  nb::capsule owner(p, [](void* q) noexcept { std::free(q); });
  *data = static_cast<T*>(p);
  return Array1<T>(*data, {n}, owner);
}

// A read-only 1-D array of signed integers of any width (side codes as narrow as they decoded).
using SignedInts = nb::ndarray<nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Its element width in bytes (1, 2, 4 or 8); std::invalid_argument(`what`) where it holds anything else.
inline int signed_width(const SignedInts& a, const char* what) {
  const int bytes = static_cast<int>(a.itemsize());
  if (a.dtype().code != static_cast<uint8_t>(nb::dlpack::dtype_code::Int) || (bytes != 1 && bytes != 2 && bytes != 4 &&
                                                                            bytes != 8))
    throw std::invalid_argument(what);
  return bytes;
}

inline nb::bytes to_bytes(const std::vector<uint8_t>& v) {
  return nb::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

// `prefix` then everything `w` holds, as one new bytes object: its one copy, made without the GIL.
inline nb::bytes to_bytes(const Writer& w, const InBuffer* prefix = nullptr) {
  const std::size_t head = prefix ? prefix->size() : 0;
  PyObject* obj = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(head + w.size()));
  if (!obj) throw nb::python_error();
  auto* dst = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(obj));
  {
    nb::gil_scoped_release release;
    if (head) std::memcpy(dst, prefix->data(), head);
    w.copy_to(dst + head);
  }
  return nb::steal<nb::bytes>(obj);
}

}  // namespace zc
