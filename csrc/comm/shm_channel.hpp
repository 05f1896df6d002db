// A one-way byte stream between two processes of one host: a ring buffer in
// POSIX shared memory with one writer and one reader. Blocking sides sleep
// on futexes in the shared header, so idle channels cost no CPU.
//
// Same-host ranks talk through these instead of loopback TCP: each byte is
// copied twice (in, out) by the ranks themselves, without the kernel's
// socket stack in between.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace bagua {

class ShmChannel {
 public:
  using Clock = std::chrono::steady_clock;
  // Called after every sleep of a blocked side (at least every 100 ms);
  // throws to abort the wait (a dead peer, a shutdown).
  using Check = std::function<void()>;

  // The reading side creates the segment (exclusively: an existing name is
  // an error) and owns its name; the writing side opens it.
  static std::unique_ptr<ShmChannel> create(const std::string& name, std::size_t capacity);
  static std::unique_ptr<ShmChannel> open(const std::string& name);
  // Removes the name; the mappings of both sides stay valid.
  static void unlink(const std::string& name);

  ~ShmChannel();
  ShmChannel(const ShmChannel&) = delete;
  ShmChannel& operator=(const ShmChannel&) = delete;

  // Writer: copies `bytes` in, publishing every quarter of the ring so the
  // reader starts early; blocks while the ring is full.
  void write(const void* src, std::size_t bytes, Clock::time_point deadline, const Check& check);
  // Reader: copies exactly `bytes` out, blocking while the ring is empty.
  void read(void* dst, std::size_t bytes, Clock::time_point deadline, const Check& check);

  // This side will not read (or write) again: the other side's blocked wait
  // fails at once instead of running into its timeout.
  void close_reader();
  void close_writer();
  // Wakes this process's threads blocked on the channel so they can check
  // for shutdown.
  void wake();

  std::size_t capacity() const { return capacity_; }

 private:
  struct Header;
  ShmChannel(void* base, std::size_t mapped, std::size_t capacity);

  Header* header() const;
  std::uint8_t* ring() const;

  void* base_;
  std::size_t mapped_;
  std::size_t capacity_;
};

}  // namespace bagua
