#include "comm/shm_transport.hpp"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "comm/shm_channel.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

using Clock = ShmChannel::Clock;

// Precedes every message in a channel.
struct MessageHeader {
  std::uint32_t magic;
  Tag tag;
  std::uint64_t bytes;
};
constexpr std::uint32_t kMessageMagic = 0xba6a0001u;
// No sane message is larger; a bigger count means a corrupted stream.
constexpr std::uint64_t kMaxMessageBytes = 1ULL << 40;

// A process handle that becomes readable when the process exits (zombies
// included), so a killed peer is noticed within one wait slice. -1 when the
// kernel has no pidfd_open.
int open_pidfd(long pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
#else
  (void)pid;
  return -1;
#endif
}

bool exited(int pidfd) {
  if (pidfd < 0) return false;
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

}  // namespace

struct ShmOp;

struct ShmTransport::Link {
  int rank = 0;
  int peer = 0;
  long pid = 0;
  int pidfd = -1;
  std::chrono::milliseconds timeout{};
  std::unique_ptr<ShmChannel> in, out;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<ShmOp>> sends;                     // not yet started, in order
  std::map<Tag, std::deque<std::shared_ptr<ShmOp>>> posted;     // receives waiting for their message
  std::map<Tag, std::deque<std::vector<std::uint8_t>>> early;   // messages that came before their receive
  std::exception_ptr broken;  // the stream failed: every later operation fails with it
  bool stopping = false;
  std::thread sender, receiver;

  ~Link() {
    if (pidfd >= 0) ::close(pidfd);
  }

  // The oldest receive posted for `tag`, or null; with mu held. A tag's
  // queue is erased once empty, here and in `early`: every bucket operation
  // uses a fresh tag, so queues left behind would grow by one per tag
  // (hundreds of bytes each, every step) until the tag space wraps.
  std::shared_ptr<ShmOp> take_posted(Tag tag) {
    auto it = posted.find(tag);
    if (it == posted.end() || it->second.empty()) return nullptr;
    auto op = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) posted.erase(it);
    return op;
  }

  // Called by a blocked channel wait after each sleep.
  void check() {
    {
      std::lock_guard lock(mu);
      if (stopping) throw Error("the shared-memory transport is shutting down");
    }
    if (exited(pidfd)) throw Error(fmt::format("rank {} (pid {}) exited", peer, pid));
  }

  void finish(ShmOp& op, std::exception_ptr error);    // with mu held
  void complete(ShmOp& op, std::exception_ptr error);  // without mu, by the thread that moved its bytes
  void fail(std::exception_ptr error);                 // without mu
  void send_loop();
  void receive_loop();
};

struct ShmOp final : Request {
  enum class State { Queued, Active, Done };

  std::shared_ptr<ShmTransport::Link> link;
  bool send = false;
  void* data = nullptr;
  std::size_t bytes = 0;
  Tag tag = 0;
  State state = State::Queued;  // guarded by link->mu
  std::exception_ptr error;
  std::shared_ptr<void> keep_alive;  // the buffer's owner, from queueing until its bytes have moved

  std::string describe() const {
    return fmt::format("rank {}: shared-memory {} of {} bytes {} rank {} (tag {})", link->rank,
                       send ? "send" : "recv", bytes, send ? "to" : "from", link->peer, tag);
  }

  void wait(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(link->mu);
    if (!link->cv.wait_for(lock, timeout, [&] { return state == State::Done; })) {
      if (state == State::Queued) {
        // Not started: withdraw it, so the caller may reuse its buffer.
        const auto mine = [&](const auto& o) { return o.get() == this; };
        if (send) {
          std::erase_if(link->sends, mine);
        } else if (auto it = link->posted.find(tag); it != link->posted.end()) {
          std::erase_if(it->second, mine);
          if (it->second.empty()) link->posted.erase(it);
        }
        state = State::Done;
        error = std::make_exception_ptr(
            TimeoutError(fmt::format("{} timed out after {} ms", describe(), timeout.count())));
      } else {
        // A copy in progress touches the buffer; it ends by its own deadline.
        link->cv.wait(lock, [&] { return state == State::Done; });
      }
    }
    if (error) std::rethrow_exception(error);
  }
};

void ShmTransport::Link::finish(ShmOp& op, std::exception_ptr error) {
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const TimeoutError& e) {
      error = std::make_exception_ptr(TimeoutError(fmt::format("{} failed: {}", op.describe(), e.what())));
    } catch (const ProtocolError& e) {
      error = std::make_exception_ptr(ProtocolError(fmt::format("{} failed: {}", op.describe(), e.what())));
    } catch (const std::exception& e) {
      error = std::make_exception_ptr(Error(fmt::format("{} failed: {}", op.describe(), e.what())));
    }
  }
  op.error = std::move(error);
  op.state = ShmOp::State::Done;
  cv.notify_all();
}

void ShmTransport::Link::complete(ShmOp& op, std::exception_ptr error) {
  // The buffer's owner (a tensor, for the backend) is let go first, outside
  // the lock and while whoever waits for the operation still holds its own
  // reference, so that this thread never drops the last one. The last
  // reference of a tensor Python has seen takes Python's GIL, and a thread
  // asking for the GIL while the interpreter shuts down is ended on the
  // spot (pthread_exit), which aborts the process from inside a destructor:
  // a message received just before a script ends did exactly that.
  op.keep_alive.reset();
  std::lock_guard lock(mu);
  finish(op, std::move(error));
}

void ShmTransport::Link::fail(std::exception_ptr error) {
  std::vector<std::shared_ptr<ShmOp>> ops;
  {
    std::lock_guard lock(mu);
    if (!broken) broken = error;
    error = broken;
    for (auto& op : sends) ops.push_back(std::move(op));
    sends.clear();
    for (auto& [tag, queue] : posted) {
      for (auto& op : queue) ops.push_back(std::move(op));
    }
    posted.clear();
    // Out of the queues and not done: a waiter that times out now waits
    // for complete() instead of withdrawing them.
    for (auto& op : ops) op->state = ShmOp::State::Active;
  }
  for (auto& op : ops) complete(*op, error);
}

void ShmTransport::Link::send_loop() {
  const auto checker = [this] { check(); };
  for (;;) {
    std::shared_ptr<ShmOp> op;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stopping || !sends.empty(); });
      if (stopping) return;
      op = sends.front();
      sends.pop_front();
      op->state = ShmOp::State::Active;
    }
    std::exception_ptr error;
    try {
      const MessageHeader h{kMessageMagic, op->tag, op->bytes};
      const auto deadline = Clock::now() + timeout;
      out->write(&h, sizeof h, deadline, checker);
      out->write(op->data, op->bytes, deadline, checker);
    } catch (...) {
      error = std::current_exception();
    }
    complete(*op, error);
    // Part of a message may be in the channel: nothing after it can be sent.
    if (error) return fail(error);
  }
}

void ShmTransport::Link::receive_loop() {
  const auto checker = [this] { check(); };
  for (;;) {
    std::shared_ptr<ShmOp> op;
    std::exception_ptr error;
    try {
      MessageHeader h{};
      // Waiting for the next message has no deadline: idle is not an error.
      in->read(&h, sizeof h, Clock::time_point::max(), checker);
      if (h.magic != kMessageMagic || h.bytes > kMaxMessageBytes) {
        throw ProtocolError(fmt::format("corrupted message header from rank {}", peer));
      }
      {
        std::lock_guard lock(mu);
        op = take_posted(h.tag);
        if (op) op->state = ShmOp::State::Active;
      }
      const auto deadline = Clock::now() + timeout;
      if (op && op->bytes == h.bytes) {
        in->read(op->data, h.bytes, deadline, checker);
        complete(*op, nullptr);
      } else {
        std::vector<std::uint8_t> message(h.bytes);
        in->read(message.data(), message.size(), deadline, checker);
        {
          std::lock_guard lock(mu);
          // A receive posted while the payload was being read is this
          // message's: it must not wait for the next one.
          if (!op) op = take_posted(h.tag);
          if (!op) {
            early[h.tag].push_back(std::move(message));
            continue;
          }
          op->state = ShmOp::State::Active;
        }
        if (op->bytes != h.bytes) {
          complete(*op, std::make_exception_ptr(ProtocolError(
                            fmt::format("expected {} bytes, rank {} sent {}", op->bytes, peer, h.bytes))));
        } else {
          std::memcpy(op->data, message.data(), message.size());
          complete(*op, nullptr);
        }
      }
    } catch (...) {
      error = std::current_exception();
    }
    if (error) {
      if (op) {
        bool done;
        {
          std::lock_guard lock(mu);
          done = op->state == ShmOp::State::Done;
        }
        if (!done) complete(*op, error);
      }
      return fail(error);
    }
  }
}

std::string ShmTransport::channel_name(const std::string& session, int src, int dst) {
  return fmt::format("/bagua-{}-{}-{}", session, src, dst);
}

ShmTransport::ShmTransport(std::string session, int rank, std::vector<int> peers, std::size_t capacity,
                           std::chrono::milliseconds timeout)
    : session_(std::move(session)), rank_(rank), capacity_(capacity), timeout_(timeout) {
  if (session_.empty() || session_.find('/') != std::string::npos) {
    throw InvalidArgument(fmt::format("shared-memory session name '{}' must be non-empty and without '/'", session_));
  }
  try {
    for (int peer : peers) {
      if (peer == rank_ || links_.count(peer)) {
        throw InvalidArgument(fmt::format("shared-memory peers must be distinct other ranks, got {}", peer));
      }
      auto l = std::make_shared<Link>();
      l->rank = rank_;
      l->peer = peer;
      l->timeout = timeout_;
      l->in = ShmChannel::create(channel_name(session_, peer, rank_), capacity_);
      links_[peer] = std::move(l);
    }
  } catch (...) {
    unlink_names();
    throw;
  }
}

ShmTransport::~ShmTransport() {
  for (auto& [peer, l] : links_) {
    {
      std::lock_guard lock(l->mu);
      l->stopping = true;
    }
    l->cv.notify_all();
    if (l->in) l->in->close_reader();
    if (l->out) l->out->close_writer();
  }
  for (auto& [peer, l] : links_) {
    if (l->sender.joinable()) l->sender.join();
    if (l->receiver.joinable()) l->receiver.join();
    l->fail(std::make_exception_ptr(Error("the shared-memory transport was shut down")));
  }
  unlink_names();
}

void ShmTransport::connect(const std::map<int, long>& peer_pids) {
  if (connected_) throw Error("ShmTransport::connect called twice");
  for (auto& [peer, l] : links_) {
    l->out = ShmChannel::open(channel_name(session_, rank_, peer));
    auto pid = peer_pids.find(peer);
    if (pid != peer_pids.end()) {
      l->pid = pid->second;
      l->pidfd = open_pidfd(pid->second);
    }
  }
  for (auto& [peer, l] : links_) {
    l->sender = std::thread([l = l.get()] { l->send_loop(); });
    l->receiver = std::thread([l = l.get()] { l->receive_loop(); });
  }
  connected_ = true;
}

void ShmTransport::unlink_names() {
  for (auto& [peer, l] : links_) ShmChannel::unlink(channel_name(session_, peer, rank_));
}

bool ShmTransport::has_peer(int peer) const { return connected_ && links_.count(peer) > 0; }

std::vector<int> ShmTransport::peers() const {
  std::vector<int> out;
  if (connected_) {
    for (const auto& [peer, l] : links_) out.push_back(peer);
  }
  return out;
}

ShmTransport::Link& ShmTransport::link(int peer) const {
  auto it = links_.find(peer);
  if (!connected_ || it == links_.end()) {
    throw InvalidArgument(fmt::format("rank {} has no shared-memory channel to rank {}", rank_, peer));
  }
  return *it->second;
}

RequestPtr ShmTransport::isend(const void* data, std::size_t bytes, int peer, Tag tag,
                               std::shared_ptr<void> keep_alive) {
  Link& l = link(peer);
  auto op = std::make_shared<ShmOp>();
  op->link = links_.at(peer);
  op->send = true;
  op->data = const_cast<void*>(data);  // only read
  op->bytes = bytes;
  op->tag = tag;
  std::lock_guard lock(l.mu);
  if (l.broken) {
    l.finish(*op, l.broken);
  } else {
    op->keep_alive = std::move(keep_alive);
    l.sends.push_back(op);
    l.cv.notify_all();
  }
  return op;
}

RequestPtr ShmTransport::irecv(void* data, std::size_t bytes, int peer, Tag tag, std::shared_ptr<void> keep_alive) {
  Link& l = link(peer);
  auto op = std::make_shared<ShmOp>();
  op->link = links_.at(peer);
  op->data = data;
  op->bytes = bytes;
  op->tag = tag;
  std::lock_guard lock(l.mu);
  auto early = l.early.find(tag);
  if (early != l.early.end()) {
    std::vector<std::uint8_t> message = std::move(early->second.front());
    early->second.pop_front();
    if (early->second.empty()) l.early.erase(early);  // see Link::take_posted
    if (message.size() != bytes) {
      l.finish(*op, std::make_exception_ptr(
                        ProtocolError(fmt::format("expected {} bytes, rank {} sent {}", bytes, peer, message.size()))));
    } else {
      std::memcpy(data, message.data(), bytes);
      l.finish(*op, nullptr);
    }
  } else if (l.broken) {
    l.finish(*op, l.broken);
  } else {
    op->keep_alive = std::move(keep_alive);
    l.posted[tag].push_back(op);
  }
  return op;
}

std::size_t ShmTransport::tracked_tags() const {
  std::size_t out = 0;
  for (const auto& [peer, l] : links_) {
    std::lock_guard lock(l->mu);
    out += l->posted.size() + l->early.size();
  }
  return out;
}

}  // namespace bagua
