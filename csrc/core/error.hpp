// The project's exception hierarchy. Every error raised by the C++ side derives
// from bagua::Error so the bindings can translate all of them in one place and
// Python sees a RuntimeError subclass carrying the same message.
#pragma once

#include <stdexcept>
#include <string>

namespace bagua {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An operation did not finish within its deadline (dead or stalled peer).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// The caller passed something that can never work (bad size, unknown name...).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// Bytes that came from a peer are malformed; never trusted, never used.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

}  // namespace bagua
