// The transforms of muse::conv3x3_winograd, Winograd's F(2x2, 3x3) on (N, H, W, C) tokens, one vector
// of W channels at a time (the problem and the tile numbering: WinogradProblem in scan_problem.h).
//
// Included by each scan_kernel_<isa>.cpp after conv_kernel_impl.h, whose store_bf16 it uses; like
// those files, everything but winograd_input and winograd_output has internal linkage.
//
// Why: the pyramid's 3x3 convolutions are the largest part of the MUSE head after the blocks' matmuls
// (5.5 of its 7.2 GMAC a video on the 14x14 grid). F(2x2, 3x3) computes each 2x2 block of outputs
// with 16 multiplications a channel pair instead of 36, as 16 matmuls (T, Ci) x (Ci, Co); these
// transforms are the adds around them, one pass over the input and one over the output.
//
//   B^T = [1  0 -1  0]    A^T = [1  1  1  0]    G = [1    0    0  ]  (the weight's transform, done once
//         [0  1  1  0]          [0  1 -1 -1]        [1/2  1/2  1/2]   in Python: U = G w G^T)
//         [0 -1  1  0]                              [1/2 -1/2  1/2]
//         [0  1  0 -1]                              [0    0    1  ]

namespace muse {
namespace MUSE_ISA_NAMESPACE {
namespace {

template <bool kBf16>
inline vf load_row(const void* base, int64_t offset, int64_t count) {
  if (count == W) {
    return kBf16 ? load_bf16(static_cast<const uint16_t*>(base) + offset)
                 : load(static_cast<const float*>(base) + offset);
  }
  alignas(64) float lanes[W];
  for (int c = 0; c < W; ++c) {
    lanes[c] = c >= count ? 0.0f
               : kBf16    ? bf16_to_float(static_cast<const uint16_t*>(base)[offset + c])
                          : static_cast<const float*>(base)[offset + c];
  }
  return load(lanes);
}

template <bool kBf16>
inline void store_row(void* base, int64_t offset, int64_t count, vf v) {
  if (count == W) {
    if (kBf16) {
      store_bf16(static_cast<uint16_t*>(base) + offset, v);
    } else {
      store(static_cast<float*>(base) + offset, v);
    }
    return;
  }
  alignas(64) float lanes[W];
  alignas(64) uint16_t halves[W];
  store(lanes, v);
  store_bf16(halves, v);
  for (int c = 0; c < count; ++c) {
    if (kBf16) {
      static_cast<uint16_t*>(base)[offset + c] = halves[c];
    } else {
      static_cast<float*>(base)[offset + c] = lanes[c];
    }
  }
}

// d0 - d2, d1 + d2, d2 - d1, d1 - d3: B^T applied to one column (or row) of a tile.
inline void input_transform_1d(const vf* d, int stride, vf* out, int out_stride) {
  out[0] = d[0] - d[2 * stride];
  out[out_stride] = d[stride] + d[2 * stride];
  out[2 * out_stride] = d[2 * stride] - d[stride];
  out[3 * out_stride] = d[stride] - d[3 * stride];
}

template <bool kBf16>
void input_tiles(const WinogradProblem& p, int64_t t0, int64_t t1) {
  const int64_t n_tiles = p.images * p.tiles_high * p.tiles_wide, channels = p.in_channels;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / (p.tiles_high * p.tiles_wide);
    const int64_t row0 = 2 * ((t / p.tiles_wide) % p.tiles_high) - 1, col0 = 2 * (t % p.tiles_wide) - 1;
    const void* pixel[16];  // the tile's 16 pixels (row-major), null outside the image
    for (int k = 0; k < 16; ++k) {
      const int64_t r = row0 + k / 4, c = col0 + k % 4;
      const bool inside = r >= 0 && r < p.height && c >= 0 && c < p.width;
      const int64_t offset = n * p.x_stride[0] + r * p.x_stride[1] + c * p.x_stride[2];
      pixel[k] = !inside ? nullptr
                 : kBf16 ? static_cast<const void*>(static_cast<const uint16_t*>(p.x) + offset)
                         : static_cast<const void*>(static_cast<const float*>(p.x) + offset);
    }
    for (int64_t ch = 0; ch < channels; ch += W) {
      const int64_t count = channels - ch < W ? channels - ch : W;
      vf d[16], rows[16], v[16];
      for (int k = 0; k < 16; ++k) d[k] = pixel[k] == nullptr ? vf{} : load_row<kBf16>(pixel[k], ch, count);
      for (int c = 0; c < 4; ++c) input_transform_1d(d + c, 4, rows + c, 4);      // B^T d: down the columns
      for (int a = 0; a < 4; ++a) input_transform_1d(rows + 4 * a, 1, v + 4 * a, 1);  // (B^T d) B: along rows
      for (int k = 0; k < 16; ++k) store_row<kBf16>(p.v, (k * n_tiles + t) * channels + ch, count, v[k]);
    }
  }
}

template <bool kBf16>
void output_tiles(const WinogradProblem& p, int64_t t0, int64_t t1) {
  const int64_t n_tiles = p.images * p.tiles_high * p.tiles_wide, channels = p.out_channels;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / (p.tiles_high * p.tiles_wide);
    const int64_t row0 = 2 * ((t / p.tiles_wide) % p.tiles_high), col0 = 2 * (t % p.tiles_wide);
    for (int64_t ch = 0; ch < channels; ch += W) {
      const int64_t count = channels - ch < W ? channels - ch : W;
      vf m[16];
      for (int k = 0; k < 16; ++k) m[k] = load_row<kBf16>(p.m, (k * n_tiles + t) * channels + ch, count);
      vf s[8];  // A^T M: 2 rows of 4
      for (int b = 0; b < 4; ++b) {
        s[b] = m[b] + m[4 + b] + m[8 + b];
        s[4 + b] = m[4 + b] - m[8 + b] - m[12 + b];
      }
      const vf bias = p.bias == nullptr ? vf{} : load_row<false>(p.bias, ch, count);
      for (int a = 0; a < 2; ++a) {
        if (row0 + a >= p.height) continue;
        const vf* r = s + 4 * a;
        const vf out[2] = {r[0] + r[1] + r[2] + bias, r[1] - r[2] - r[3] + bias};  // (A^T M) A
        for (int b = 0; b < 2; ++b) {
          if (col0 + b >= p.width) continue;
          const int64_t pixel = (n * p.height + row0 + a) * p.width + col0 + b;
          store_row<kBf16>(p.y, pixel * channels + ch, count, out[b]);
        }
      }
    }
  }
}

}  // namespace

void winograd_input(const WinogradProblem& p, int64_t t0, int64_t t1) {
  p.bf16 ? input_tiles<true>(p, t0, t1) : input_tiles<false>(p, t0, t1);
}

void winograd_output(const WinogradProblem& p, int64_t t0, int64_t t1) {
  p.bf16 ? output_tiles<true>(p, t0, t1) : output_tiles<false>(p, t0, t1);
}

}  // namespace MUSE_ISA_NAMESPACE
}  // namespace muse
