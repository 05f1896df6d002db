// BAGUA_HD marks a function that the CUDA kernels share with the CPU code:
// __host__ __device__ under nvcc, nothing for the host compiler. Sharing the
// one definition is what makes the CUDA codecs write the CPU's bytes.
#pragma once

#if defined(__CUDACC__)
#define BAGUA_HD __host__ __device__
#else
#define BAGUA_HD
#endif
