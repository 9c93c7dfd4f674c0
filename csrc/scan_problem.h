// The selective scan as plain pointers and sizes: the contract between the torch glue
// (selective_scan.cpp) and the per-instruction-set kernels (scan_kernel_*.cpp).
//
// Kept free of torch headers on purpose: the kernels are compiled several times with different
// `#pragma GCC target`s, and any inline function they shared with the rest of the library could be
// merged by the linker into its AVX-512 copy and then crash on an older CPU.
#pragma once

#include <cstdint>

// Runtime choice between AVX-512 / AVX2 / baseline builds of the kernel. GCC on x86-64 only: other
// compilers and CPUs get the baseline build (still correct, about 3-4x slower).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MUSE_SCAN_MULTIVERSION 1
#endif

namespace muse {

// An input with a time axis, (batch, Di, L): fp32, or bf16 read as is (a bfloat16 is the upper half of
// a float), any strides (in elements). Fast when the time or the channel stride is 1.
struct TimeInput {
  const void* data = nullptr;
  int64_t stride[3] = {0, 0, 0};
  bool bf16 = false;
};

struct ScanProblem {
  int64_t batch = 0, channels = 0, length = 0, dstate = 0, groups = 1;
  TimeInput u, delta;
  TimeInput z;  // optional: data null when absent
  const float* A = nullptr;           // (Di, N) contiguous
  const float* Bt = nullptr;          // (batch, groups, L, N) contiguous: B with time before state
  const float* Ct = nullptr;          // (batch, groups, L, N) contiguous
  const float* D = nullptr;           // (Di,) optional
  const float* delta_bias = nullptr;  // (Di,) optional
  bool delta_softplus = false;
  float* y = nullptr;           // (batch, Di, L) contiguous
  float* last_state = nullptr;  // (batch, Di, N) contiguous, optional
  // The backward direction of a bidirectional scan: the recurrence runs from step L-1 down to 0 over
  // inputs in natural order, and each output is added to y at the step it was computed for.
  bool reverse = false;
  bool accumulate = false;  // y += instead of y =
};

// Runs channels [d0, d0 + count) of batch item b, count <= the kernel's width (floats per vector), all
// inside one group of B/C.
using ScanBlockFn = void (*)(const ScanProblem& p, int64_t b, int64_t d0, int64_t count);

// The depthwise conv over time of BiMamba's time-major activations (muse::depthwise_conv_time_major):
// y[b, t, d] = bias[d] + sum_k weight[k, d] x[b, t + offset(k), d], offset(k) = k - (K-1) (causal) or
// (K-1) - k (reverse: anti-causal, the kernel flipped); steps outside [0, L) count as zero; then
// y = y * sigmoid(y) when silu. Computed in fp32.
struct ConvProblem {
  int64_t batch = 0, length = 0, channels = 0, taps = 0;
  const void* x = nullptr;  // (batch, L, Di), fp32 or bf16 (x_bf16), any strides (fast when channel stride is 1)
  int64_t x_stride[3] = {0, 0, 0};
  bool x_bf16 = false;
  const float* weight = nullptr;  // (K, Di) contiguous: tap-major, so a block of channels is one vector
  const float* bias = nullptr;    // (Di,) optional
  bool reverse = false, silu = false;
  void* y = nullptr;  // (batch, L, Di) contiguous, fp32 or bf16 (y_bf16, rounded to nearest even)
  bool y_bf16 = false;
};

// Computes time steps [t0, t1) of batch item b, every channel.
using ConvRowsFn = void (*)(const ConvProblem& p, int64_t b, int64_t t0, int64_t t1);

// The widest build of conv_rows this CPU runs (MUSE_SCAN_CPU_ISA caps it, as for the scan).
ConvRowsFn pick_conv_kernel();

// A 3x3 convolution (stride 1, zero padding 1) by Winograd's F(2x2, 3x3) (muse::conv3x3_winograd), on
// tokens (N, H, W, C): the input's 4x4 tiles at stride 2 (tile t = (n * TH + i) * TW + j, TH = ceil(H/2),
// TW = ceil(W/2), tile (i, j) covering rows 2i-1 .. 2i+2 and columns 2j-1 .. 2j+2) become V = B^T d B,
// 16 rows of V[k] (T, Ci), one matmul a k gives M[k] = V[k] U[k] (T, Co), and y = A^T M A + bias
// writes the tile's 2x2 outputs (rows 2i, 2i+1 and columns 2j, 2j+1 that lie inside the image).
// Sums in fp32; V and y rounded once to the tensors' dtype (fp32, or bf16 when `bf16`).
struct WinogradProblem {
  int64_t images = 0, height = 0, width = 0, in_channels = 0, out_channels = 0;
  int64_t tiles_high = 0, tiles_wide = 0;
  const void* x = nullptr;        // (N, H, W, Ci), channel stride 1
  int64_t x_stride[3] = {0, 0, 0};  // strides of N, H, W in elements
  void* v = nullptr;              // (16, T, Ci) contiguous
  const void* m = nullptr;        // (16, T, Co) contiguous
  const float* bias = nullptr;    // (Co,) optional
  void* y = nullptr;              // (N, H, W, Co) contiguous
  bool bf16 = false;
};

// Transforms tiles [t0, t1): the input one writes V, the output one reads M and writes y.
using WinogradTilesFn = void (*)(const WinogradProblem& p, int64_t t0, int64_t t1);
struct WinogradKernels {
  WinogradTilesFn input, output;
};

// The widest build of the Winograd transforms this CPU runs (MUSE_SCAN_CPU_ISA caps it).
WinogradKernels pick_winograd_kernels();

namespace baseline {
extern const int kWidth;
void scan_block(const ScanProblem& p, int64_t b, int64_t d0, int64_t count);
void conv_rows(const ConvProblem& p, int64_t b, int64_t t0, int64_t t1);
void winograd_input(const WinogradProblem& p, int64_t t0, int64_t t1);
void winograd_output(const WinogradProblem& p, int64_t t0, int64_t t1);
}  // namespace baseline

#if defined(MUSE_SCAN_MULTIVERSION)
namespace avx2 {
extern const int kWidth;
void scan_block(const ScanProblem& p, int64_t b, int64_t d0, int64_t count);
void conv_rows(const ConvProblem& p, int64_t b, int64_t t0, int64_t t1);
void winograd_input(const WinogradProblem& p, int64_t t0, int64_t t1);
void winograd_output(const WinogradProblem& p, int64_t t0, int64_t t1);
}  // namespace avx2
namespace avx512 {
extern const int kWidth;
void scan_block(const ScanProblem& p, int64_t b, int64_t d0, int64_t count);
void conv_rows(const ConvProblem& p, int64_t b, int64_t t0, int64_t t1);
void winograd_input(const WinogradProblem& p, int64_t t0, int64_t t1);
void winograd_output(const WinogradProblem& p, int64_t t0, int64_t t1);
}  // namespace avx512
#endif

}  // namespace muse
