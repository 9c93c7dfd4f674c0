// muse::depthwise_conv_time_major: its schema and CPU kernel (the loop is in conv_kernel_impl.h).
//
// BiMamba's depthwise conv over time, with its SiLU, on time-major (batch, L, Di) activations. The math
// is muse_infer/ops/conv.py's depthwise_conv_time_major_ref; the Python side (fake kernel, the
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

constexpr const char* kConvName = "muse::depthwise_conv_time_major";
constexpr int64_t kTileSteps = 256;  // time steps a work item: ~0.1 ms at Di = 512

void check_conv_arguments(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 3, kConvName, ": x must be 3-D (batch, L, Di), got shape ", x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(2) && weight.size(1) >= 1, kConvName,
              ": weight must have shape (Di, K) with Di = ", x.size(2), ", got ", weight.sizes());
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(2), kConvName, ": bias must have shape (Di,) = (",
                x.size(2), ",), got ", bias->sizes());
  }
  for (const at::Tensor* t : {&x, &weight, bias ? &*bias : nullptr}) {
    if (t == nullptr) continue;
    TORCH_CHECK(t->device().is_cpu(), kConvName, ": tensors must be on the CPU, got ", t->device());
    const auto dtype = t->scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, kConvName, ": dtype ", dtype,
                " is not supported; the op takes float32, float16 or bfloat16");
  }
}

// x (batch, L, Di) any strides -> y (batch, L, Di) contiguous in x's dtype, computed in fp32. bfloat16
// is read and written by the kernel itself; float16 goes through fp32 copies.
at::Tensor depthwise_conv_time_major_cpu(const at::Tensor& x, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, bool reverse, bool silu) {
  check_conv_arguments(x, weight, bias);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const at::Tensor input = bf16 ? x : x.to(at::kFloat);
  const at::Tensor weight_t = weight.to(at::kFloat).t().contiguous();  // (K, Di)
  const at::Tensor bias_f = bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor y = at::empty(x.sizes(), x.options().dtype(bf16 ? at::kBFloat16 : at::kFloat));

  ConvProblem p;
  p.batch = x.size(0), p.length = x.size(1), p.channels = x.size(2), p.taps = weight.size(1);
  p.x = input.const_data_ptr();
  for (int i = 0; i < 3; ++i) p.x_stride[i] = input.stride(i);
  p.x_bf16 = p.y_bf16 = bf16;
  p.weight = weight_t.const_data_ptr<float>();
  p.bias = bias_f.defined() ? bias_f.const_data_ptr<float>() : nullptr;
  p.reverse = reverse, p.silu = silu;
  p.y = y.mutable_data_ptr();
  if (y.numel() > 0) {
    const ConvRowsFn rows = pick_conv_kernel();
    const int64_t tiles = (p.length + kTileSteps - 1) / kTileSteps, n_items = p.batch * tiles;
    // A thread for each ~2^18 elements (~0.1 ms); none from inside another parallel region.
    const int64_t threads = std::min<int64_t>(at::get_num_threads(), 1 + y.numel() / (int64_t{1} << 18));
    const int helpers = at::in_parallel_region() ? 0 : static_cast<int>(std::min(threads, n_items) - 1);
    parallel_items(n_items, helpers, [&](int64_t item) {
      const int64_t t0 = (item % tiles) * kTileSteps;
      rows(p, item / tiles, t0, std::min(p.length, t0 + kTileSteps));
    });
  }
  return x.scalar_type() == at::kHalf ? y.to(at::kHalf) : y;
}

}  // namespace
}  // namespace muse

// muse_infer/ops/op.py holds the same schema text for builds without this library (a test keeps the
// two equal), and the fake kernel.
TORCH_LIBRARY_FRAGMENT(muse, m) {
  m.set_python_module("muse_infer.ops.op");  // where the fake kernel lives, for torch.export / compile
  m.def(
      "depthwise_conv_time_major(Tensor x, Tensor weight, Tensor? bias=None, bool reverse=False, "
      "bool silu=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(muse, CPU, m) { m.impl("depthwise_conv_time_major", &muse::depthwise_conv_time_major_cpu); }
