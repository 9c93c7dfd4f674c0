// The kernel of muse::depthwise_conv_time_major: BiMamba's depthwise conv over time (and its SiLU) on
// time-major (batch, L, Di) rows, one vector of W channels at a time.
//
// Included by each scan_kernel_<isa>.cpp right after scan_kernel_impl.h, whose vector helpers (vf,
// load, store, silu_fast) it uses; like that file, everything but conv_rows has internal linkage.
//
// Why a kernel: the conv is 4 multiply-adds an element. As torch ops on time-major rows it took 4
// passes over memory (5.5 ms a direction at the MUSE shape, one thread), and nn.Conv1d wants
// (batch, Di, L), a transposing copy away. Here x is read once and y written once, with the SiLU.

namespace muse {
namespace MUSE_ISA_NAMESPACE {
namespace {

// Floats to bfloat16, rounded to nearest even (as torch rounds); a NaN stays a (quiet) NaN.
inline void store_bf16(uint16_t* p, vf v) {
  const vu bits = (vu)v;
  const vu rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const vu nan = (bits >> 16) | 0x40u;
  const vh h = __builtin_convertvector((bits & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded, vh);
  __builtin_memcpy(p, &h, sizeof h);
}

// Channels [d0, d0 + count) of x at (b, t); lanes past count are zero.
inline vf load_x(const ConvProblem& p, int64_t b, int64_t t, int64_t d0, int64_t count) {
  const int64_t offset = b * p.x_stride[0] + t * p.x_stride[1] + d0 * p.x_stride[2];
  if (p.x_stride[2] == 1 && count == W) {
    return p.x_bf16 ? load_bf16(static_cast<const uint16_t*>(p.x) + offset)
                    : load(static_cast<const float*>(p.x) + offset);
  }
  alignas(64) float lanes[W];
  for (int c = 0; c < W; ++c) {
    const int64_t at = offset + c * p.x_stride[2];
    lanes[c] = c >= count ? 0.0f
               : p.x_bf16 ? bf16_to_float(static_cast<const uint16_t*>(p.x)[at])
                          : static_cast<const float*>(p.x)[at];
  }
  return load(lanes);
}

inline void store_y(const ConvProblem& p, int64_t b, int64_t t, int64_t d0, int64_t count, vf v) {
  const int64_t offset = (b * p.length + t) * p.channels + d0;
  if (count == W) {
    if (p.y_bf16) {
      store_bf16(static_cast<uint16_t*>(p.y) + offset, v);
    } else {
      store(static_cast<float*>(p.y) + offset, v);
    }
    return;
  }
  alignas(64) float lanes[W];
  store(lanes, v);
  if (p.y_bf16) {
    alignas(64) uint16_t halves[W];
    store_bf16(halves, v);
    for (int c = 0; c < count; ++c) static_cast<uint16_t*>(p.y)[offset + c] = halves[c];
  } else {
    for (int c = 0; c < count; ++c) static_cast<float*>(p.y)[offset + c] = lanes[c];
  }
}

// One step t and channels [d0, d0 + count) of batch item b, any strides: the generic path.
inline void conv_block(const ConvProblem& p, int64_t b, int64_t t, int64_t d0, int64_t count) {
  const bool full = count == W;
  vf acc = p.bias == nullptr ? vf{} : full ? load(p.bias + d0) : load_lanes(p.bias + d0, count, 0.0f);
  for (int64_t k = 0; k < p.taps; ++k) {
    const int64_t source = p.reverse ? t + (p.taps - 1 - k) : t - (p.taps - 1) + k;
    if (source < 0 || source >= p.length) continue;
    const float* w = p.weight + k * p.channels + d0;
    acc += (full ? load(w) : load_lanes(w, count, 0.0f)) * load_x(p, b, source, d0, count);
  }
  if (p.silu) acc = silu_fast(acc);
  store_y(p, b, t, d0, count, acc);
}

constexpr int kMaxTaps = 16;  // conv widths above this take the generic loop

// Time steps [t0, t1) of batch item b when x's channel stride is 1 and the taps fit kMaxTaps: the
// rows a step reads are found once, and each full block of W channels is K vector loads and FMAs.
template <bool kBf16>
void conv_rows_contiguous(const ConvProblem& p, int64_t b, int64_t t0, int64_t t1) {
  const int64_t taps = p.taps, channels = p.channels, full = channels - channels % W;
  for (int64_t t = t0; t < t1; ++t) {
    const void* rows[kMaxTaps];  // the row of x each tap reads at step t, or null outside [0, L)
    for (int64_t k = 0; k < taps; ++k) {
      const int64_t source = p.reverse ? t + (taps - 1 - k) : t - (taps - 1) + k;
      const int64_t offset = b * p.x_stride[0] + source * p.x_stride[1];
      rows[k] = source < 0 || source >= p.length ? nullptr
                : kBf16                          ? static_cast<const void*>(static_cast<const uint16_t*>(p.x) + offset)
                                                 : static_cast<const void*>(static_cast<const float*>(p.x) + offset);
    }
    for (int64_t d0 = 0; d0 < full; d0 += W) {
      vf acc = p.bias != nullptr ? load(p.bias + d0) : vf{};
      for (int64_t k = 0; k < taps; ++k) {
        if (rows[k] == nullptr) continue;
        const vf x = kBf16 ? load_bf16(static_cast<const uint16_t*>(rows[k]) + d0)
                           : load(static_cast<const float*>(rows[k]) + d0);
        acc += load(p.weight + k * channels + d0) * x;
      }
      if (p.silu) acc = silu_fast(acc);
      store_y(p, b, t, d0, W, acc);
    }
    if (full < channels) conv_block(p, b, t, full, channels - full);
  }
}

}  // namespace

void conv_rows(const ConvProblem& p, int64_t b, int64_t t0, int64_t t1) {
  if (p.x_stride[2] == 1 && p.taps <= kMaxTaps) {
    if (p.x_bf16) {
      conv_rows_contiguous<true>(p, b, t0, t1);
    } else {
      conv_rows_contiguous<false>(p, b, t0, t1);
    }
    return;
  }
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t d0 = 0; d0 < p.channels; d0 += W) conv_block(p, b, t, d0, p.channels - d0 < W ? p.channels - d0 : W);
  }
}

}  // namespace MUSE_ISA_NAMESPACE
}  // namespace muse
