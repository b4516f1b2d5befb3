// Torch glue of the CUDA DDBN kernels (csrc/cuda/ddbn_kernels.cu): argument checks, dtype
// conversions of the small per-channel tensors, output allocation, the device guard and the
// current stream. Compiled only when torch has CUDA.

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

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddbn_forward_cuda(
    const at::Tensor& h_, const at::Tensor& alpha, int64_t n1, const at::Tensor& gamma,
    const at::Tensor& beta, double eps, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double momentum) {
  check_input(h_, n1, gamma, "ddbn_forward");
  TORCH_CHECK(alpha.numel() == 2 && beta.sizes() == gamma.sizes(),
              "ddbn_forward: alpha must be [2] and beta [C]");
  const c10::cuda::CUDAGuard guard(h_.device());
  const at::Tensor h = h_.contiguous();
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  const auto st = acc_type(h.scalar_type());
  const auto al = small(alpha, h), g = small(gamma, h), b = small(beta, h);
  auto y = at::empty_like(h);
  auto mean = at::empty({2, T, C}, h.options().dtype(st));
  auto rstd = at::empty({2, T, C}, h.options().dtype(st));

  const bool has_rm = running_mean.has_value() && running_mean->defined();
  const bool has_rv = running_var.has_value() && running_var->defined();
  TORCH_CHECK(has_rm == has_rv, "ddbn_forward: give both running_mean and running_var, or neither");
  at::Tensor rm, rv;
  if (has_rm) {
    for (const auto* r : {&*running_mean, &*running_var})
      TORCH_CHECK(r->dim() == 3 && r->size(0) == 2 && r->size(1) >= 1 && r->size(2) == C &&
                      r->device() == h.device(),
                  "ddbn_forward: running statistics must be [2, T_max, C=", C, "] on ",
                  h.device(), ", got ", r->sizes(), " on ", r->device());
    rm = running_mean->to(st).contiguous();
    rv = running_var->to(st).contiguous();
  }
  cuda::ForwardArgs a{};
  a.h = h.data_ptr();
  a.y = y.data_ptr();
  a.mean = mean.data_ptr();
  a.rstd = rstd.data_ptr();
  a.alpha = al.data_ptr();
  a.gamma = g.data_ptr();
  a.beta = b.data_ptr();
  a.running_mean = has_rm ? rm.data_ptr() : nullptr;
  a.running_var = has_rm ? rv.data_ptr() : nullptr;
  a.T = T;
  a.N = N;
  a.C = C;
  a.n1 = n1;
  a.t_max = has_rm ? rm.size(1) : 0;
  a.eps = eps;
  a.momentum = momentum;
  check_launch(cuda::ddbn_forward(kernel_dtype(h), a, at::cuda::getCurrentCUDAStream()),
               "ddbn_forward");
  if (has_rm) {  // the kernel worked on converted copies: write them back
    if (!rm.is_same(*running_mean)) running_mean->copy_(rm);
    if (!rv.is_same(*running_var)) running_var->copy_(rv);
  }
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ddbn_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& h_, const at::Tensor& alpha, int64_t n1,
    const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd, double eps) {
  check_input(h_, n1, gamma, "ddbn_backward");
  TORCH_CHECK(grad_y.sizes() == h_.sizes(), "ddbn_backward: grad_y ", grad_y.sizes(),
              " does not match h ", h_.sizes());
  const c10::cuda::CUDAGuard guard(h_.device());
  const at::Tensor h = h_.contiguous();
  const at::Tensor gy = grad_y.to(h.scalar_type()).contiguous();
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  TORCH_CHECK(mean.sizes() == rstd.sizes() && mean.dim() == 3 && mean.size(0) == 2 &&
                  mean.size(1) == T && mean.size(2) == C,
              "ddbn_backward: mean and rstd must be [2, T, C], got ", mean.sizes(), " and ",
              rstd.sizes());
  const auto st = acc_type(h.scalar_type());
  const auto al = small(alpha, h), g = small(gamma, h);
  const auto m = mean.to(st).contiguous(), r = rstd.to(st).contiguous();
  auto dh = at::empty_like(h);
  auto dgamma_t = at::empty({T, C}, h.options().dtype(st));
  auto dbeta_t = at::empty({T, C}, h.options().dtype(st));
  auto dalpha_part = at::empty({T * cuda::channel_tiles(C), 2}, h.options().dtype(st));
  cuda::BackwardArgs a{};
  a.grad_y = gy.data_ptr();
  a.h = h.data_ptr();
  a.grad_h = dh.data_ptr();
  a.alpha = al.data_ptr();
  a.gamma = g.data_ptr();
  a.mean = m.data_ptr();
  a.rstd = r.data_ptr();
  a.dgamma_t = dgamma_t.data_ptr();
  a.dbeta_t = dbeta_t.data_ptr();
  a.dalpha_part = dalpha_part.data_ptr();
  a.T = T;
  a.N = N;
  a.C = C;
  a.n1 = n1;
  a.eps = eps;
  check_launch(cuda::ddbn_backward(kernel_dtype(h), a, at::cuda::getCurrentCUDAStream()),
               "ddbn_backward");
  // Deterministic final reductions over timesteps / blocks.
  return {dh, dalpha_part.sum(0).to(alpha.device(), alpha.scalar_type()),
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
