// Reuse of the large CPU buffers of the fused layer ops ([T, N, 4H] projections and their
// gradients, hundreds of MB per training step).
//
// Blocks this large are mmap'ed by glibc on every allocation and unmapped on every free, so
// each call pays a page fault and a kernel zero-fill for every 4 KiB it touches -- as much as
// the whole layer's arithmetic on a 2-core machine. A training loop asks for the same sizes
// call after call, so freed blocks are kept (up to a byte cap) and handed out again.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace actrec {
namespace workspace {

// Bytes of freed blocks kept for reuse at most: ACTREC_WORKSPACE_CACHE_MB (MiB) when set when
// the library loads, else 1024 MiB; 0 turns the cache off.
int64_t cache_limit_bytes();

// An uninitialised CPU tensor like at::empty(sizes, opt). Blocks of at least 1 MiB come from
// (and, once the tensor's storage is freed, return to) the cache; smaller ones from ATen.
at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& opt);

// Frees every cached block; returns the bytes released.
int64_t clear();

// Bytes held by the cache now (free blocks only).
int64_t cached_bytes();

}  // namespace workspace
}  // namespace actrec
