// Tags for operations: each operation gets a block of consecutive tags, so
// that one needing many (R rings at once, a loop of rounds) has room, and
// two operations in flight together never share one. A source hands out the
// same blocks in the same order on every rank, as long as every rank asks
// for them in the same order (the engine's rule for bucket operations).
#pragma once

#include "comm/communicator.hpp"

namespace bagua {

class TagBlock {
 public:
  TagBlock(Tag base, Tag size);
  // The i-th tag of the block; throws when the operation wants more than it has.
  Tag operator[](Tag i) const;
  Tag size() const { return size_; }

 private:
  Tag base_;
  Tag size_;
};

class TagSource {
 public:
  // Blocks of `block` tags from the range [base, base + span), wrapping
  // around at its end; operations span / block apart are never in flight
  // together.
  TagSource(Tag base, Tag span, Tag block);
  TagBlock next();

 private:
  Tag base_;
  Tag blocks_;  // in the range
  Tag block_;
  Tag next_ = 0;
};

}  // namespace bagua
