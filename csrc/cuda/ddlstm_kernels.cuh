// Raw-pointer CUDA kernels of the whole-sequence DDLSTM / BNLSTM layer (no torch headers: this
// pair compiles with plain `nvcc -c -arch=sm_90 ddlstm_kernels.cu`). The time loop, the GEMMs
// and the CUDA graph live in ddlstm_layer_cuda.cu. Formulas: shared/design/ddbn.md;
// structure: ddlstm-performance-study.md section 4 and csrc/cpu/ddlstm_layer_cpu.cpp.
//
// A step kernel block owns kUnits hidden units (their 4 gate columns) over all N rows:
// threadIdx.x = unit within the tile (8 units = one 32-byte sector per row for float),
// threadIdx.y = row group; every batch reduction stays inside the block.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/ddlstm_cell.h"

namespace actrec {
namespace ddlstm_cuda {

constexpr int kUnits = 8;
constexpr int kRowGroups = 32;

inline int64_t num_tiles(int64_t H) { return (H + kUnits - 1) / kUnits; }

// Row weights: the kernels read the raw contribution weights w [2, T, N] (made by
// actrec.ops.domains.contribution_weights; no DDBN formula here) and the BN(c) weights
// w_c [T, N], with inv_s = 1 / sum_j w per (domain, step) in double (0 where the sum is 0: no
// real row, mean = var = 0). Scalars that change between calls live in device memory so that
// a captured CUDA graph reads the current ones.

template <typename T>
struct FwdStepArgs {
  int64_t N, H, n1;
  const T* w0;            // [N] raw weights of domain 0 at step t (0 on padding)
  const T* w1;            // [N] domain 1
  const double* inv_s0;  // -> 1 / S_0(t)
  const double* inv_s1;
  const T* wc;            // [N] BN(c) weights at step t
  const double* inv_sc;
  const T* gh;     // [N, 4H] h_{t-1} W_hh^T
  const T* xp;     // [N, 4H] x_t W_ih^T
  const T* sx;     // [2, 4H] x-path scale at step t
  const T* shx;    // [2, 4H] x-path shift (+ beta_h + bias) at step t
  const T* gamma_h;
  const T* gamma_c;
  const T* beta_c;
  const T* cprev;  // [N, H]
  T* c;            // [N, H]
  T* h;            // [N, H]
  T* mean_h;       // slot 0 at step t, slot 1 at + dstride
  T* var_h;
  int64_t dstride;
  T* mean_c;       // [H] at step t
  T* var_c;
  T eps;
};

template <typename T>
struct BwdStepArgs {
  int64_t N, H, n1;
  const T* w0;  // [N] raw weights at step t, as in FwdStepArgs
  const T* w1;
  const double* inv_s0;
  const double* inv_s1;
  const T* wc;
  const double* inv_sc;
  const T* gh;
  const T* xp;
  const T* mean_h;
  const T* var_h;
  const T* mean_x;
  const T* var_x;
  int64_t dstride;
  const T* mean_c;
  const T* var_c;
  const T* gamma_h;
  const T* beta_h;
  const T* gamma_x;
  const T* beta_x;
  const T* bias;
  const T* gamma_c;
  const T* beta_c;
  const T* c;       // [N, H] c_t
  const T* cprev;   // [N, H] c_{t-1}
  const T* gout;    // [N, H]
  const T* dhrec;   // [N, H]
  T* dc;            // [N, H] in: dL/dc_t (carried), out: dL/dc_{t-1}
  T* dgh;           // [N, 4H]
  T* dxp;           // [N, 4H]
  T* act;           // [N, 4H] scratch: gate activations
  T* da;            // [N, 4H] scratch: gate pre-activation gradients
  T* dy;            // [N, H] scratch
  double* acc_gamma_h;  // [4H]
  double* acc_gamma_x;
  double* acc_bias;
  double* acc_gamma_c;  // [H]
  double* acc_beta_c;
  double* dw_part;      // [num_tiles, 2, N]: this step's S_d dL/dw_d(t, j), per tile (written)
  T eps;
};

// inv[r] = 1 / sum_j w[r, j] for rows r of w [rows, N] (0 where the sum is 0), in double.
template <typename T>
void launch_inv_sums(const T* w, int64_t rows, int64_t N, double* inv, cudaStream_t stream);

// Per-step DDBN statistics of xp [T, N, 4H] with weights w [2, T, N] -> mean/var [2, T, 4H],
// scale/shift [T, 2, 4H].
template <typename T>
void launch_x_stats(const T* xp, int64_t T_, int64_t N, int64_t G, int ndom, const T* w,
                    const double* inv_s, T eps, const T* gamma_x, const T* beta_x,
                    const T* beta_h, const T* bias, T* mean, T* var, T* scale, T* shift,
                    cudaStream_t stream);

template <typename T>
void launch_fwd_step(const FwdStepArgs<T>& a, int ndom, cudaStream_t stream);

template <typename T>
void launch_bwd_step(const BwdStepArgs<T>& a, int ndom, cudaStream_t stream);

// grad_w{0,1}[j] = inv_s{0,1} * sum_tiles dw_part[tile, d, j]: dL/dw at one step.
template <typename T>
void launch_w_grad_step(const double* dw_part, int64_t ntiles, int64_t N, const double* inv_s0,
                        const double* inv_s1, T* grad_w0, T* grad_w1, cudaStream_t stream);

// Evaluation step (running statistics folded into affine maps, see csrc/ddlstm.cpp): one
// thread per (row, hidden unit); rows independent.
template <typename T>
struct EvalStepArgs {
  int64_t N, H;
  const int64_t* domain;  // [N] 0/1
  const T* gh;       // [N, 4H]
  const T* xp;       // [N, 4H]
  const T* scale_h;  // [2, 4H] at step t, slot 1 at + dstride
  const T* scale_x;
  const T* shift;
  int64_t dstride;
  const T* scale_c;  // [H] at step t
  const T* shift_c;
  const T* cprev;    // [N, H]
  T* c;
  T* h;
};

template <typename T>
void launch_eval_step(const EvalStepArgs<T>& a, cudaStream_t stream);

}  // namespace ddlstm_cuda
}  // namespace actrec
