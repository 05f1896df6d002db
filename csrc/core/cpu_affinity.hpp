// How many cores this process may run on (its CPU affinity, which a
// container's cpuset or taskset narrows), not how many the machine has.
#pragma once

namespace bagua {

int available_cores();

}  // namespace bagua
