// CPU kernels of the DDBN ops (schemas in csrc/ddbn.cpp; spec in shared/design/ddbn.md).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace actrec {

// h [T,N,C]; weights [2,T,N] (actrec.ops.domains.contribution_weights: tanh weights times the
// padding mask, or the mask in both slots for plain batch norm); rows 0..n1-1 are normalised
// with domain D1's statistics, the others with D2's. Returns (y [T,N,C], mean [2,T,C],
// var [2,T,C]): weighted statistics, the variance biased; 0 where a domain has no weight at t.
// Statistics are float64 for float64 inputs and float32 otherwise; sums accumulate in double.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ddbn_forward_cpu(
    const at::Tensor& h, const at::Tensor& weights, int64_t n1, const at::Tensor& gamma,
    const at::Tensor& beta, double eps);

// Gradients (grad_h [T,N,C], grad_weights [2,T,N], grad_gamma [C], grad_beta [C]) from the
// statistics ddbn_forward_cpu returned.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ddbn_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& h, const at::Tensor& weights, int64_t n1,
    const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& var, double eps);

// Evaluation: row n uses running slot domain[n] (0/1); t >= T_max uses slot T_max - 1.
at::Tensor ddbn_eval_cpu(const at::Tensor& h, const at::Tensor& domain,
                         const at::Tensor& running_mean, const at::Tensor& running_var,
                         const at::Tensor& gamma, const at::Tensor& beta, double eps);

}  // namespace actrec
