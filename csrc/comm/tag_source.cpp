#include "comm/tag_source.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace bagua {

TagBlock::TagBlock(Tag base, Tag size) : base_(base), size_(size) {}

Tag TagBlock::operator[](Tag i) const {
  if (i >= size_) {
    throw InvalidArgument(fmt::format("an operation asked for its tag {} of {}; its tag block is too small", i, size_));
  }
  return base_ + i;
}

TagSource::TagSource(Tag base, Tag span, Tag block) : base_(base), blocks_(block ? span / block : 0), block_(block) {
  if (blocks_ == 0) throw InvalidArgument(fmt::format("a tag range of {} cannot hold blocks of {}", span, block));
}

TagBlock TagSource::next() {
  const Tag index = next_;
  next_ = (next_ + 1) % blocks_;
  return TagBlock(base_ + index * block_, block_);
}

}  // namespace bagua
