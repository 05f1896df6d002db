#include "topology/link_rates.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <string>

#include "core/error.hpp"

namespace bagua {

std::vector<double> parse_link_mbit(std::string_view text, int size, std::string_view source) {
  std::vector<double> rates;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    std::size_t end = text.find(',', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string item(text.substr(begin, end - begin));
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    double v = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || !(v > 0) || !std::isfinite(v)) {
      throw InvalidArgument(fmt::format("{}=\"{}\": \"{}\" is not a positive rate in Mbit/s; write one rate per rank, "
                                        "e.g. {}=1000,1000,100,20",
                                        source, std::string(text), item, source));
    }
    rates.push_back(v);
    begin = end + 1;
  }
  if (static_cast<int>(rates.size()) != size) {
    throw InvalidArgument(fmt::format("{}=\"{}\" gives {} rates for {} ranks; give exactly one per rank", source,
                                      std::string(text), rates.size(), size));
  }
  return rates;
}

}  // namespace bagua
