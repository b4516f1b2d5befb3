// CUDA kernels of the dual-domain batch norm (DDBN), on raw pointers: this header and
// ddbn_kernels.cu need only the CUDA runtime (no torch), so plain nvcc compiles them. The torch
// glue is csrc/cuda/ddbn_cuda.cu. Spec: shared/design/ddbn.md.
//
// The kernels take the contribution weights w [2,T,N] (made by actrec/ops/domains.py: the tanh
// contributions times the padding mask, or the mask in both slots for plain batch norm).
// Pointers marked "acc" hold the statistics type: double for float64 inputs, float otherwise;
// the batch reductions themselves accumulate in double for every input type.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace actrec {
namespace cuda {

enum class DType : int { kFloat32, kFloat64, kFloat16, kBFloat16 };

constexpr int kTile = 32;            // channels per block: one warp's width
constexpr int64_t kMaxBatch = 1024;  // largest N: a timestep's 2N weights sit in shared memory

struct ForwardArgs {
  const void* h;        // [T,N,C] input
  void* y;              // [T,N,C] output
  void* mean;           // acc [2,T,C] output; 0 where a domain has no weight at t
  void* var;            // acc [2,T,C] output (biased); 0 where a domain has no weight at t
  const void* weights;  // acc [2,T,N]
  const void* gamma;    // acc [C]
  const void* beta;     // acc [C]
  int64_t T, N, C, n1;
  double eps;
};

struct BackwardArgs {
  const void* grad_y;   // [T,N,C]
  const void* h;        // [T,N,C]
  void* grad_h;         // [T,N,C] output
  const void* weights;  // acc [2,T,N]
  const void* gamma;    // acc [C]
  const void* mean;     // acc [2,T,C] returned by the forward
  const void* var;      // acc [2,T,C]
  double* dgamma_t;     // [T,C] output: per-timestep partial sums (the caller sums over T)
  double* dbeta_t;      // [T,C] output
  double* dw_part;      // [T, channel_tiles(C), 2, N] output: dL/dw per channel tile (caller sums)
  int64_t T, N, C, n1;
  double eps;
};

struct EvalArgs {
  const void* h;             // [T,N,C]
  void* y;                   // [T,N,C] output
  const int64_t* domain;     // [N] of 0/1 (validated by actrec.ops.ddbn.ddbn_eval)
  const void* running_mean;  // acc [2,t_max,C]
  const void* running_var;   // acc [2,t_max,C]
  const void* gamma;         // acc [C]
  const void* beta;          // acc [C]
  int64_t T, N, C, t_max;
  double eps;
};

inline int64_t channel_tiles(int64_t c) { return (c + kTile - 1) / kTile; }

// Each enqueues its kernel on `stream` and returns the launch status (no synchronisation).
cudaError_t ddbn_forward(DType dtype, const ForwardArgs& args, cudaStream_t stream);
cudaError_t ddbn_backward(DType dtype, const BackwardArgs& args, cudaStream_t stream);
cudaError_t ddbn_eval(DType dtype, const EvalArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace actrec
