// The DDBN op schemas (namespace `actrec`) and the Python module shell `actrec._C`.
//
// Kernels live beside their backend: csrc/cpu/ddbn_cpu.cpp (TORCH_LIBRARY_IMPL(actrec, CPU)) and
// csrc/cuda/ddbn_cuda.cu (TORCH_LIBRARY_IMPL(actrec, CUDA)). Fake (meta) and autograd
// registrations are in Python: actrec/ops/ddbn.py. Other ops join the namespace with
// TORCH_LIBRARY_FRAGMENT(actrec, m) from their own files.
//
// Importing the module runs the static registrations; the module itself only reports how it
// was built, so that `actrec info` can say what is active.

#include <Python.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

TORCH_LIBRARY(actrec, m) {
  // h [T,N,C]; weights [2,T,N], the contribution weights of actrec/ops/domains.py (padding
  // has weight 0); rows 0..n1-1 are normalised with domain D1's statistics. Returns y [T,N,C]
  // and the per-domain batch statistics mean, var [2,T,C] (biased; 0 where a domain has no
  // weight at t; float64 for float64 inputs, float32 otherwise). Pure: nothing is mutated.
  m.def(
      "ddbn_forward(Tensor h, Tensor weights, int n1, Tensor gamma, Tensor beta, float eps) "
      "-> (Tensor y, Tensor mean, Tensor var)");
  // The backward of ddbn_forward with respect to h, weights, gamma and beta.
  m.def(
      "ddbn_backward(Tensor grad_y, Tensor h, Tensor weights, int n1, Tensor gamma, "
      "Tensor mean, Tensor var, float eps) -> (Tensor grad_h, Tensor grad_weights, "
      "Tensor grad_gamma, Tensor grad_beta)");
  // Evaluation with population statistics: domain [N] int64 of 0/1 picks the running slot;
  // timesteps t >= T_max use slot T_max - 1.
  m.def(
      "ddbn_eval(Tensor h, Tensor domain, Tensor running_mean, Tensor running_var, "
      "Tensor gamma, Tensor beta, float eps) -> Tensor");
}

// Build facts arrive as bare tokens (-DACTREC_SOURCE_HASH=ab12..., -DACTREC_CUDA_VERSION=13.0)
// because quoted strings do not survive the build tools' shells; stringify them here.
#define ACTREC_STR2(x) #x
#define ACTREC_STR(x) ACTREC_STR2(x)

namespace {

std::string compiler_string() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

// What this binary contains. ACTREC_WITH_CUDA / ACTREC_CUDA_VERSION are defined by the build
// (setup.py or actrec/ops/_ext.py) only when the csrc/cuda sources were compiled in.
pybind11::dict build_info() {
  pybind11::dict d;
  d["cpu"] = true;
#ifdef ACTREC_WITH_CUDA
  d["cuda"] = true;
#ifdef ACTREC_CUDA_VERSION
  d["cuda_version"] = std::string(ACTREC_STR(ACTREC_CUDA_VERSION));
#else
  d["cuda_version"] = std::string("unknown");
#endif
#else
  d["cuda"] = false;
  d["cuda_version"] = pybind11::none();
#endif
  d["compiler"] = compiler_string();
  d["torch_version"] = std::string(TORCH_VERSION);
#ifdef ACTREC_SOURCE_HASH
  d["source_hash"] = std::string(ACTREC_STR(ACTREC_SOURCE_HASH));  // lets a stale build be detected
#else
  d["source_hash"] = pybind11::none();
#endif
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "actrec's compiled ops (registered under torch.ops.actrec on import)";
  m.def("build_info", &build_info, "What was compiled: cpu, cuda, cuda_version, compiler, torch_version");
}
