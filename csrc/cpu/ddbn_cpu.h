// CPU kernels of the DDBN ops (schemas in csrc/ddbn.cpp; spec in docs / design/ddbn.md).
// Exposed so that other C++ ops (the fused DDLSTM layer) can call them directly.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace actrec {

// h [T,N,C], alpha [2], 0 <= n1 <= N. Returns (y [T,N,C], mean [2,T,C], rstd [2,T,C]); the
// statistics are float32 for half/bfloat16 inputs. Updates running_mean/var [2,T_max,C] in
// place for t < min(T, T_max) when both are given.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ddbn_forward_cpu(
    const at::Tensor& h, const at::Tensor& alpha, int64_t n1, const at::Tensor& gamma,
    const at::Tensor& beta, double eps, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double momentum);

// Gradients (grad_h, grad_alpha [2], grad_gamma [C], grad_beta [C]) from the saved statistics.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ddbn_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& h, const at::Tensor& alpha, int64_t n1,
    const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd, double eps);

// Evaluation: row n uses running slot domain[n] (0/1); t >= T_max uses slot T_max - 1.
at::Tensor ddbn_eval_cpu(const at::Tensor& h, const at::Tensor& domain,
                         const at::Tensor& running_mean, const at::Tensor& running_var,
                         const at::Tensor& gamma, const at::Tensor& beta, double eps);

}  // namespace actrec
