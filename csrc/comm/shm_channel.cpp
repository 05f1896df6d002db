#include "comm/shm_channel.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "core/error.hpp"

namespace bagua {
namespace {

constexpr std::uint64_t kMagic = 0x62616775615f7368ULL;  // "bagua_sh"
// The ring starts this far into the segment (room for Header, cache aligned).
constexpr std::size_t kHeaderBytes = 256;
// A blocked side re-checks its peer and the shutdown flag this often.
constexpr auto kSlice = std::chrono::milliseconds(100);

static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free,
              "shared-memory atomics must be lock-free to work across processes");

std::uint32_t* word(std::atomic<std::uint32_t>& a) { return reinterpret_cast<std::uint32_t*>(&a); }

// Sleeps while `a` still holds `expected`, for at most `slice`; callers
// re-check their condition whatever woke them.
void futex_wait(std::atomic<std::uint32_t>& a, std::uint32_t expected, std::chrono::nanoseconds slice) {
  timespec ts{static_cast<time_t>(slice.count() / 1'000'000'000), static_cast<long>(slice.count() % 1'000'000'000)};
  syscall(SYS_futex, word(a), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>& a) { syscall(SYS_futex, word(a), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0); }

std::string sys_error(const std::string& what, const std::string& name) {
  return fmt::format("{} {}: {}", what, name, std::strerror(errno));
}

}  // namespace

// Each side's counters on their own cache line, so the writer's and the
// reader's updates do not bounce one line between cores.
struct ShmChannel::Header {
  std::uint64_t magic;
  std::uint64_t capacity;
  alignas(64) std::atomic<std::uint64_t> head;  // bytes ever written
  std::atomic<std::uint32_t> head_seq;          // bumped after each publish (futex word)
  std::atomic<std::uint32_t> writer_closed;
  alignas(64) std::atomic<std::uint64_t> tail;  // bytes ever read
  std::atomic<std::uint32_t> tail_seq;          // bumped after each consume (futex word)
  std::atomic<std::uint32_t> reader_closed;
};

ShmChannel::ShmChannel(void* base, std::size_t mapped, std::size_t capacity)
    : base_(base), mapped_(mapped), capacity_(capacity) {}

ShmChannel::~ShmChannel() { munmap(base_, mapped_); }

ShmChannel::Header* ShmChannel::header() const {
  static_assert(sizeof(Header) <= kHeaderBytes);
  return static_cast<Header*>(base_);
}
std::uint8_t* ShmChannel::ring() const { return static_cast<std::uint8_t*>(base_) + kHeaderBytes; }

std::unique_ptr<ShmChannel> ShmChannel::create(const std::string& name, std::size_t capacity) {
  if (capacity < 4096) throw InvalidArgument(fmt::format("shared-memory channel capacity {} is below 4096", capacity));
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) throw Error(sys_error("cannot create shared memory", name));
  const std::size_t mapped = kHeaderBytes + capacity;
  // posix_fallocate, not ftruncate: a full /dev/shm must fail here, not as
  // a SIGBUS at the first write into a page that cannot be backed.
  const int rc = posix_fallocate(fd, 0, static_cast<off_t>(mapped));
  if (rc != 0) {
    errno = rc;
    const std::string msg = sys_error("cannot size shared memory", name);
    close(fd);
    shm_unlink(name.c_str());
    throw Error(msg + " (is /dev/shm full or too small? set BAGUA_SHM=0 to use TCP)");
  }
  void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) {
    shm_unlink(name.c_str());
    throw Error(sys_error("cannot map shared memory", name));
  }
  auto* h = new (base) Header{};
  h->capacity = capacity;
  std::atomic_thread_fence(std::memory_order_release);
  h->magic = kMagic;
  return std::unique_ptr<ShmChannel>(new ShmChannel(base, mapped, capacity));
}

std::unique_ptr<ShmChannel> ShmChannel::open(const std::string& name) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) throw Error(sys_error("cannot open shared memory", name));
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < kHeaderBytes + 4096) {
    close(fd);
    throw ProtocolError(fmt::format("shared memory {} is too small to be a bagua channel", name));
  }
  const auto mapped = static_cast<std::size_t>(st.st_size);
  void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) throw Error(sys_error("cannot map shared memory", name));
  const auto* h = static_cast<const Header*>(base);
  if (h->magic != kMagic || h->capacity + kHeaderBytes != mapped) {
    munmap(base, mapped);
    throw ProtocolError(fmt::format("shared memory {} is not a bagua channel", name));
  }
  return std::unique_ptr<ShmChannel>(new ShmChannel(base, mapped, h->capacity));
}

void ShmChannel::unlink(const std::string& name) { shm_unlink(name.c_str()); }

void ShmChannel::write(const void* src, std::size_t bytes, Clock::time_point deadline, const Check& check) {
  Header& h = *header();
  const auto* in = static_cast<const std::uint8_t*>(src);
  const std::size_t piece = std::max<std::size_t>(capacity_ / 4, 1);
  std::size_t done = 0;
  while (done < bytes) {
    // The sequence word is read before the condition, so a consume that
    // lands in between changes it and the futex wait returns at once.
    const std::uint32_t seq = h.tail_seq.load(std::memory_order_acquire);
    const std::uint64_t head = h.head.load(std::memory_order_relaxed);
    const std::uint64_t free = capacity_ - (head - h.tail.load(std::memory_order_acquire));
    if (free == 0) {
      if (h.reader_closed.load(std::memory_order_acquire)) throw Error("the receiving rank closed the channel");
      if (Clock::now() >= deadline) throw TimeoutError("shared-memory send: the receiver did not drain the channel");
      futex_wait(h.tail_seq, seq, std::min<Clock::duration>(kSlice, deadline - Clock::now()));
      check();
      continue;
    }
    const std::size_t n = std::min<std::size_t>({free, bytes - done, piece});
    const std::size_t at = head % capacity_;
    const std::size_t first = std::min(n, capacity_ - at);
    std::memcpy(ring() + at, in + done, first);
    std::memcpy(ring(), in + done + first, n - first);
    h.head.store(head + n, std::memory_order_release);
    h.head_seq.fetch_add(1, std::memory_order_release);
    futex_wake(h.head_seq);
    done += n;
  }
}

void ShmChannel::read(void* dst, std::size_t bytes, Clock::time_point deadline, const Check& check) {
  Header& h = *header();
  auto* out = static_cast<std::uint8_t*>(dst);
  std::size_t done = 0;
  while (done < bytes) {
    const std::uint32_t seq = h.head_seq.load(std::memory_order_acquire);
    const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
    const std::uint64_t avail = h.head.load(std::memory_order_acquire) - tail;
    if (avail == 0) {
      if (h.writer_closed.load(std::memory_order_acquire)) throw Error("the sending rank closed the channel");
      if (Clock::now() >= deadline) throw TimeoutError("shared-memory receive: nothing arrived");
      futex_wait(h.head_seq, seq, std::min<Clock::duration>(kSlice, deadline - Clock::now()));
      check();
      continue;
    }
    const std::size_t n = std::min<std::size_t>(avail, bytes - done);
    const std::size_t at = tail % capacity_;
    const std::size_t first = std::min(n, capacity_ - at);
    std::memcpy(out + done, ring() + at, first);
    std::memcpy(out + done + first, ring(), n - first);
    h.tail.store(tail + n, std::memory_order_release);
    h.tail_seq.fetch_add(1, std::memory_order_release);
    futex_wake(h.tail_seq);
    done += n;
  }
}

void ShmChannel::close_reader() {
  header()->reader_closed.store(1, std::memory_order_release);
  wake();
}

void ShmChannel::close_writer() {
  header()->writer_closed.store(1, std::memory_order_release);
  wake();
}

void ShmChannel::wake() {
  // Bumping the words makes a sleeper that is just about to wait return too.
  header()->head_seq.fetch_add(1, std::memory_order_release);
  header()->tail_seq.fetch_add(1, std::memory_order_release);
  futex_wake(header()->head_seq);
  futex_wake(header()->tail_seq);
}

}  // namespace bagua
