// Torch glue of the CUDA DDBN kernels (csrc/cuda/ddbn_kernels.cu): argument checks, dtype
// conversions of the weights and the small per-channel tensors, output allocation, the device
// guard and the current stream. Compiled only when torch has CUDA.

#include "ddbn_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

namespace actrec {
namespace {

cuda::DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kDouble: return cuda::DType::kFloat64;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "ddbn: unsupported dtype ", t.scalar_type());
  }
}

// Accumulation / statistics type: double for float64 inputs, float otherwise.
at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_launch(cudaError_t e, const char* op) {
  TORCH_CHECK(e == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(e));
}

void check_input(const at::Tensor& h, int64_t n1, const at::Tensor& gamma, const char* op) {
  TORCH_CHECK(h.is_cuda(), op, ": expected a CUDA tensor");
  TORCH_CHECK(h.dim() == 3, op, ": expected h of shape [T, N, C], got ", h.sizes());
  const int64_t n = h.size(1);
  TORCH_CHECK(n >= 1 && n <= cuda::kMaxBatch, op, ": the CUDA kernels take 1 <= N <= ",
              cuda::kMaxBatch, ", got N=", n);
  TORCH_CHECK(0 <= n1 && n1 <= n, op, ": split point n1=", n1, " outside 0..", n);
  TORCH_CHECK(gamma.dim() == 1 && gamma.size(0) == h.size(2), op, ": gamma must be [C=",
              h.size(2), "], got ", gamma.sizes());
}

// A small tensor as a contiguous accumulation-type tensor on h's device.
at::Tensor small(const at::Tensor& v, const at::Tensor& h) {
  return v.detach().to(h.device(), acc_type(h.scalar_type())).contiguous();
}

// The weights [2,T,N] as a contiguous accumulation-type tensor on h's device, after checks.
at::Tensor checked_weights(const at::Tensor& w, const at::Tensor& h, const char* op) {
  const int64_t T = h.size(0), N = h.size(1);
  TORCH_CHECK(w.dim() == 3 && w.size(0) == 2 && w.size(1) == T && w.size(2) == N, op,
              ": weights must be [2, T=", T, ", N=", N, "], got ", w.sizes());
  TORCH_CHECK(at::isFloatingType(w.scalar_type()), op, ": weights must be floating point, got ",
              w.scalar_type());
  return small(w, h);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddbn_forward_cuda(
    const at::Tensor& h_, const at::Tensor& weights, int64_t n1, const at::Tensor& gamma,
    const at::Tensor& beta, double eps) {
  check_input(h_, n1, gamma, "ddbn_forward");
  TORCH_CHECK(beta.sizes() == gamma.sizes(), "ddbn_forward: beta must be [C], got ",
              beta.sizes());
  const c10::cuda::CUDAGuard guard(h_.device());
  const at::Tensor h = h_.contiguous();
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  const auto st = acc_type(h.scalar_type());
  const auto w = checked_weights(weights, h, "ddbn_forward");
  const auto g = small(gamma, h), b = small(beta, h);
  auto y = at::empty_like(h);
  auto mean = at::empty({2, T, C}, h.options().dtype(st));
  auto var = at::empty({2, T, C}, h.options().dtype(st));
  cuda::ForwardArgs a{};
  a.h = h.data_ptr();
  a.y = y.data_ptr();
  a.mean = mean.data_ptr();
  a.var = var.data_ptr();
  a.weights = w.data_ptr();
  a.gamma = g.data_ptr();
  a.beta = b.data_ptr();
  a.T = T;
  a.N = N;
  a.C = C;
  a.n1 = n1;
  a.eps = eps;
  check_launch(cuda::ddbn_forward(kernel_dtype(h), a, at::cuda::getCurrentCUDAStream()),
               "ddbn_forward");
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ddbn_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& h_, const at::Tensor& weights, int64_t n1,
    const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& var, double eps) {
  check_input(h_, n1, gamma, "ddbn_backward");
  TORCH_CHECK(grad_y.sizes() == h_.sizes(), "ddbn_backward: grad_y ", grad_y.sizes(),
              " does not match h ", h_.sizes());
  const c10::cuda::CUDAGuard guard(h_.device());
  const at::Tensor h = h_.contiguous();
  const at::Tensor gy = grad_y.to(h.scalar_type()).contiguous();
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  TORCH_CHECK(mean.sizes() == var.sizes() && mean.dim() == 3 && mean.size(0) == 2 &&
                  mean.size(1) == T && mean.size(2) == C,
              "ddbn_backward: mean and var must be [2, T, C], got ", mean.sizes(), " and ",
              var.sizes());
  const auto st = acc_type(h.scalar_type());
  const auto w = checked_weights(weights, h, "ddbn_backward");
  const auto g = small(gamma, h);
  const auto m = mean.to(h.device(), st).contiguous(), v = var.to(h.device(), st).contiguous();
  const int64_t tiles = cuda::channel_tiles(C);
  const auto f64 = h.options().dtype(at::kDouble);
  auto dh = at::empty_like(h);
  auto dgamma_t = at::empty({T, C}, f64);
  auto dbeta_t = at::empty({T, C}, f64);
  auto dw_part = at::empty({T, tiles, 2, N}, f64);
  cuda::BackwardArgs a{};
  a.grad_y = gy.data_ptr();
  a.h = h.data_ptr();
  a.grad_h = dh.data_ptr();
  a.weights = w.data_ptr();
  a.gamma = g.data_ptr();
  a.mean = m.data_ptr();
  a.var = v.data_ptr();
  a.dgamma_t = dgamma_t.data_ptr<double>();
  a.dbeta_t = dbeta_t.data_ptr<double>();
  a.dw_part = dw_part.data_ptr<double>();
  a.T = T;
  a.N = N;
  a.C = C;
  a.n1 = n1;
  a.eps = eps;
  check_launch(cuda::ddbn_backward(kernel_dtype(h), a, at::cuda::getCurrentCUDAStream()),
               "ddbn_backward");
  // Deterministic final reductions (no atomics) over channel tiles and timesteps, in double.
  auto dw = dw_part.sum(1).transpose(0, 1);  // [T, 2, N] -> [2, T, N]
  return {dh, dw.to(weights.device(), weights.scalar_type()).contiguous(),
          dgamma_t.sum(0).to(gamma.device(), gamma.scalar_type()),
          dbeta_t.sum(0).to(gamma.device(), gamma.scalar_type())};
}

at::Tensor ddbn_eval_cuda(const at::Tensor& h_, const at::Tensor& domain,
                          const at::Tensor& running_mean, const at::Tensor& running_var,
                          const at::Tensor& gamma, const at::Tensor& beta, double eps) {
  TORCH_CHECK(h_.is_cuda() && h_.dim() == 3, "ddbn_eval: expected a CUDA h [T, N, C], got ",
              h_.sizes());
  const int64_t T = h_.size(0), N = h_.size(1), C = h_.size(2);
  TORCH_CHECK(domain.dim() == 1 && domain.size(0) == N, "ddbn_eval: domain must be [N=", N,
              "], got ", domain.sizes());
  TORCH_CHECK(running_mean.sizes() == running_var.sizes() && running_mean.dim() == 3 &&
                  running_mean.size(0) == 2 && running_mean.size(1) >= 1 &&
                  running_mean.size(2) == C,
              "ddbn_eval: running statistics must be [2, T_max, C=", C, "], got ",
              running_mean.sizes(), " and ", running_var.sizes());
  TORCH_CHECK(gamma.numel() == C && beta.numel() == C, "ddbn_eval: gamma and beta must be [C]");
  const c10::cuda::CUDAGuard guard(h_.device());
  const at::Tensor h = h_.contiguous();
  // Flags are checked to be 0/1 by actrec.ops.ddbn.ddbn_eval, for every backend (a check here
  // would cost a device synchronisation per call).
  const auto dom = domain.to(h.device(), at::kLong).contiguous();
  const auto rm = small(running_mean, h), rv = small(running_var, h);
  const auto g = small(gamma, h), b = small(beta, h);
  auto y = at::empty_like(h);
  cuda::EvalArgs a{};
  a.h = h.data_ptr();
  a.y = y.data_ptr();
  a.domain = dom.data_ptr<int64_t>();
  a.running_mean = rm.data_ptr();
  a.running_var = rv.data_ptr();
  a.gamma = g.data_ptr();
  a.beta = b.data_ptr();
  a.T = T;
  a.N = N;
  a.C = C;
  a.t_max = rm.size(1);
  a.eps = eps;
  check_launch(cuda::ddbn_eval(kernel_dtype(h), a, at::cuda::getCurrentCUDAStream()),
               "ddbn_eval");
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(actrec, CUDA, m) {
  m.impl("ddbn_forward", &ddbn_forward_cuda);
  m.impl("ddbn_backward", &ddbn_backward_cuda);
  m.impl("ddbn_eval", &ddbn_eval_cuda);
}

}  // namespace actrec
