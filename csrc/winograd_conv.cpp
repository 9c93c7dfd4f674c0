// muse::conv3x3_winograd: a 3x3 convolution (stride 1, zero padding 1) on (N, H, W, C) tokens by
// Winograd's F(2x2, 3x3): its schema and CPU kernel (the transforms are in winograd_kernel_impl.h).
//
// The math is muse_infer/ops/winograd.py's conv3x3_winograd_ref; the Python side (fake kernel, the
// reference for builds without this library, the refusal of gradients) is in muse_infer/ops/op.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "parallel_items.h"
#include "scan_problem.h"

namespace muse {
namespace {

constexpr const char* kWinogradName = "muse::conv3x3_winograd";
constexpr int64_t kTilesPerItem = 16;  // ~0.05 ms of transform at 512 channels

void check_winograd_arguments(const at::Tensor& x, const at::Tensor& U, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 4, kWinogradName, ": x must be 4-D tokens (N, H, W, Ci), got shape ", x.sizes());
  TORCH_CHECK(U.dim() == 3 && U.size(0) == 16 && U.size(1) == x.size(3), kWinogradName,
              ": U must be the transformed weight (16, Ci, Co) with Ci = ", x.size(3), ", got shape ", U.sizes());
  TORCH_CHECK(x.scalar_type() == U.scalar_type(), kWinogradName, ": x and U must have one dtype, got ",
              x.scalar_type(), " and ", U.scalar_type());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, kWinogradName, ": dtype ",
              x.scalar_type(), " is not supported; the op takes float32 or bfloat16");
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == U.size(2), kWinogradName, ": bias must have shape (Co,) = (",
                U.size(2), ",), got ", bias->sizes());
  }
  for (const at::Tensor* t : {&x, &U, bias ? &*bias : nullptr}) {
    if (t != nullptr) TORCH_CHECK(t->device().is_cpu(), kWinogradName, ": tensors must be on the CPU, got ", t->device());
  }
}

// Calls transform(p, t0, t1) over every tile, shared among threads like the other ops' items.
void for_each_tiles(const WinogradProblem& p, WinogradTilesFn transform, int64_t elements) {
  const int64_t n_tiles = p.images * p.tiles_high * p.tiles_wide;
  const int64_t n_items = (n_tiles + kTilesPerItem - 1) / kTilesPerItem;
  // A thread for each ~2^18 elements (~0.1 ms); none from inside another parallel region.
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), 1 + elements / (int64_t{1} << 18));
  const int helpers = at::in_parallel_region() ? 0 : static_cast<int>(std::min(threads, n_items) - 1);
  parallel_items(n_items, helpers, [&](int64_t item) {
    const int64_t t0 = item * kTilesPerItem;
    transform(p, t0, std::min(n_tiles, t0 + kTilesPerItem));
  });
}

// x (N, H, W, Ci) any strides, U (16, Ci, Co) in x's dtype, bias (Co,) -> y (N, H, W, Co) contiguous.
at::Tensor conv3x3_winograd_cpu(const at::Tensor& x, const at::Tensor& U, const std::optional<at::Tensor>& bias) {
  check_winograd_arguments(x, U, bias);
  const at::Tensor input = x.stride(3) == 1 ? x : x.contiguous();
  const at::Tensor bias_f = bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
  WinogradProblem p;
  p.images = x.size(0), p.height = x.size(1), p.width = x.size(2);
  p.in_channels = x.size(3), p.out_channels = U.size(2);
  p.tiles_high = (p.height + 1) / 2, p.tiles_wide = (p.width + 1) / 2;
  p.bf16 = x.scalar_type() == at::kBFloat16;
  at::Tensor y = at::empty({p.images, p.height, p.width, p.out_channels}, x.options());
  const int64_t n_tiles = p.images * p.tiles_high * p.tiles_wide;
  if (y.numel() == 0) return y;

  p.x = input.const_data_ptr();
  for (int i = 0; i < 3; ++i) p.x_stride[i] = input.stride(i);
  at::Tensor V = at::empty({16, n_tiles, p.in_channels}, x.options());
  p.v = V.mutable_data_ptr();
  const WinogradKernels kernels = pick_winograd_kernels();
  for_each_tiles(p, kernels.input, V.numel());
  const at::Tensor M = at::bmm(V, U).contiguous();  // (16, T, Co): one matmul a tile position
  p.m = M.const_data_ptr();
  p.bias = bias_f.defined() ? bias_f.const_data_ptr<float>() : nullptr;
  p.y = y.mutable_data_ptr();
  for_each_tiles(p, kernels.output, M.numel());
  return y;
}

}  // namespace
}  // namespace muse

// muse_infer/ops/op.py holds the same schema text for builds without this library (a test keeps the
// two equal), and the fake kernel.
TORCH_LIBRARY_FRAGMENT(muse, m) {
  m.set_python_module("muse_infer.ops.op");  // where the fake kernel lives, for torch.export / compile
  m.def("conv3x3_winograd(Tensor x, Tensor U, Tensor? bias=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(muse, CPU, m) { m.impl("conv3x3_winograd", &muse::conv3x3_winograd_cpu); }
