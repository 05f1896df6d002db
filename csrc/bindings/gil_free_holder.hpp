// The Python side's owner of a c10::intrusive_ptr object (our backend)
// that lets go of the GIL while it drops its reference.
//
// Python drops its last reference to an object with the GIL held. A backend
// that dies then tears down its inner Gloo group, whose destructor waits for
// Gloo's worker threads; a worker that is just destroying a finished
// operation (a barrier keeps the all-gather before it alive) releases that
// operation's tensors, and releasing a tensor Python has seen takes the GIL:
// each waits for the other, forever (seen at the end of `python -m
// bagua_ravnest.plan --measure-nodes` under torchrun on a busy machine).
// Without the GIL held, the worker finishes and the destructor goes on.
#pragma once

#include <pybind11/pybind11.h>
#include <torch/csrc/utils/pybind.h>

#include <utility>

namespace bagua {

template <class T>
class GilFreeHolder {
 public:
  GilFreeHolder() = default;
  GilFreeHolder(c10::intrusive_ptr<T> ptr) : ptr_(std::move(ptr)) {}  // NOLINT: implicit, as a holder is
  // pybind11 wraps raw pointers of objects it creates (no reference yet)
  // and of objects others own (which gain one).
  explicit GilFreeHolder(T* raw)
      : ptr_(c10::raw::intrusive_ptr::use_count(raw) == 0 ? c10::intrusive_ptr<T>::unsafe_steal_from_new(raw)
                                                          : c10::intrusive_ptr<T>::unsafe_reclaim_from_nonowning(raw)) {}
  GilFreeHolder(const GilFreeHolder&) = default;
  GilFreeHolder(GilFreeHolder&&) noexcept = default;
  GilFreeHolder& operator=(const GilFreeHolder&) = default;
  GilFreeHolder& operator=(GilFreeHolder&&) noexcept = default;

  ~GilFreeHolder() {
    if (!ptr_) return;
    if (PyGILState_Check()) {
      pybind11::gil_scoped_release released;
      ptr_.reset();
    } else {
      ptr_.reset();
    }
  }

  T* get() const noexcept { return ptr_.get(); }
  T& operator*() const noexcept { return *ptr_; }
  T* operator->() const noexcept { return ptr_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(ptr_); }

 private:
  c10::intrusive_ptr<T> ptr_;
};

}  // namespace bagua

PYBIND11_DECLARE_HOLDER_TYPE(T, bagua::GilFreeHolder<T>, true)
