// The selective-scan CPU kernel, written once with GCC vector extensions.
//
// Included by each scan_kernel_<isa>.cpp after its `#pragma GCC target`, with MUSE_VEC_WIDTH (floats
// per vector) and MUSE_ISA_NAMESPACE defined; no header may be included after this point (see
// scan_problem.h). Everything but scan_block and kWidth has internal linkage, so the copies built for
// different instruction sets never meet in the linker.
//
// Layout: one vector lane per channel. A block of W channels is scanned together, time step by time
// step, so the N states of a channel live in N vectors and y_t needs no horizontal sum. Each tile of
// kTile steps of u, delta and z is gathered into (time, channel) buffers that stay in L1: with W x W
// in-register transposes from time-contiguous rows, or plain vector loads when the channel stride is 1.
// The cost is the exp(delta * A) of every (channel, step, state): a polynomial exp2 on whole vectors,
// 9 instructions for W of them with AVX-512, then 3 more for the state and the output.

namespace muse {
namespace MUSE_ISA_NAMESPACE {

extern const int kWidth;
const int kWidth = MUSE_VEC_WIDTH;

namespace {

constexpr int W = MUSE_VEC_WIDTH;
constexpr int kTile = 64;  // 4 buffers of (kTile, W) floats plus kTile rows of B and C fit in L1
constexpr int kMaxFixedState = 16;
constexpr double kLog2eD = 1.4426950408889634;
constexpr float kLog2e = static_cast<float>(kLog2eD);

typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(W * sizeof(float))));

inline vf splat(float x) { return vf{} + x; }
inline vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
typedef uint32_t vu __attribute__((vector_size(W * sizeof(uint32_t))));
typedef uint16_t vh __attribute__((vector_size(W * sizeof(uint16_t))));

// W bfloat16 values to floats, exactly: a bfloat16 is the upper half of a float's bits.
inline vf load_bf16(const uint16_t* p) {
  vh h;
  __builtin_memcpy(&h, p, sizeof h);
  return (vf)(__builtin_convertvector(h, vu) << 16);
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

// Loads W consecutive elements (float or bfloat16) as floats.
inline vf load_as_float(const float* p) { return load(p); }
inline vf load_as_float(const uint16_t* p) { return load_bf16(p); }
inline float as_float(float x) { return x; }
inline float as_float(uint16_t x) { return bf16_to_float(x); }

inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }

// Every exp here splits its argument y into round(y) and a rest, and scales a polynomial of the rest by
// 2^round(y). ExpSplit holds round(y) as a float, and whatever the scaling needs.
#if defined(MUSE_SCAN_AVX512_EXP2)
struct ExpSplit {
  vf k;
};
inline ExpSplit split_exponent(vf y) {
  // The maskz forms: GCC 12's unmasked ones read an "undefined" register that -Wall reports.
  return {(vf)_mm512_maskz_roundscale_ps(0xffff, (__m512)y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
// p 2^k with vscalefps, which underflows to 0 and overflows to inf correctly: callers need no clamping.
inline vf times_pow2(vf p, ExpSplit e) { return (vf)_mm512_maskz_scalef_ps(0xffff, (__m512)p, (__m512)e.k); }
constexpr bool kClampExponent = false;
#else
struct ExpSplit {
  vf k;
  vi biased;  // k + 127, float's exponent field
};
// For y in [-127, 127] (callers clamp): truncating y + 127.5 > 0 is floor(y + 0.5) + 127.
inline ExpSplit split_exponent(vf y) {
  const vi biased = __builtin_convertvector(y + 127.5f, vi);
  // k from the integer: with -ffast-math, x - (float(biased) - 127) may become (x + 127) - float(biased),
  // which rounds away the low bits of x.
  return {__builtin_convertvector(biased - 127, vf), biased};
}
// p 2^k by building 2^k's bits; k = -127 gives 0 (the true value is below float's normal range).
inline vf times_pow2(vf p, ExpSplit e) { return p * (vf)(e.biased << 23); }
constexpr bool kClampExponent = true;
#endif

// 2^r for r in [-0.5, 0.5] (Cephes exp2f coefficients), relative error ~1e-7.
inline vf exp2_poly(vf r) {
  vf p = splat(1.535336188319500e-4f);
  p = p * r + 1.339887440266574e-3f;
  p = p * r + 9.618437357674640e-3f;
  p = p * r + 5.550332471162809e-2f;
  p = p * r + 2.402264791363012e-1f;
  p = p * r + 6.931472028550421e-1f;
  return p * r + 1.0f;
}

// 2^x for the scan's exp(delta A) = 2^(delta A log2(e)); 9 instructions with AVX-512. Generic builds
// return 0 below 2^-127 and saturate near 2^127.
inline vf exp2_fast(vf x) {
  if (kClampExponent) x = vmin(vmax(x, splat(-127.0f)), splat(127.0f));
  const ExpSplit e = split_exponent(x);
  return times_pow2(exp2_poly(x - e.k), e);
}

// e^x with Cody-Waite reduction (x = k ln2 + r, ln2 split in two so that k ln2_hi is exact) and
// Cephes' expf polynomial: relative error ~1e-7 over the whole range, no bias growing with |x|.
inline vf exp_fast(vf x) {
  if (kClampExponent) x = vmin(vmax(x, splat(-87.5f)), splat(88.0f));
  const ExpSplit e = split_exponent(x * kLog2e);
  const vf r = (x - e.k * 0.693359375f) - e.k * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return times_pow2(p * r * r + r + 1.0f, e);
}

// log1p(w) / w for w in [0, 1]: Chebyshev fit of degree 10, relative error 1.2e-7 in fp32 and no bias.
// Why not log(1 + w): rounding 1 + w loses the low digits of small w, and softplus of the step size
// (a few 1e-3 in Mamba) lives there; a 1e-5 relative bias in delta showed up 10x in y after 3000 steps.
inline vf log1p_over_w(vf w) {
  vf p = splat(0.001986696384847164f);
  p = p * w - 0.013187825679779053f;
  p = p * w + 0.04100657254457474f;
  p = p * w - 0.08188040554523468f;
  p = p * w + 0.12377995997667313f;
  p = p * w - 0.16087622940540314f;
  p = p * w + 0.19885820150375366f;
  p = p * w - 0.24986496567726135f;
  p = p * w + 0.33332496881484985f;
  p = p * w - 0.4999997913837433f;
  return p * w + 1.0f;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)).
inline vf softplus_fast(vf x) {
  const vf w = exp_fast((vf)((vi)x | (vi)splat(-0.0f)));  // exp(-|x|), in (0, 1]
  return vmax(x, splat(0.0f)) + w * log1p_over_w(w);
}

#if defined(MUSE_SCAN_AVX512_EXP2)
// 1/x from the 14-bit estimate and one Newton step (~1 ulp): a 512-bit divide costs ~10x more.
inline vf reciprocal(vf x) {
  const vf r = (vf)_mm512_maskz_rcp14_ps(0xffff, (__m512)x);
  return r * (2.0f - x * r);
}
#else
inline vf reciprocal(vf x) { return 1.0f / x; }
#endif

// x sigmoid(x). The exponent is capped so that 1 + e^-x stays finite: Newton's step on inf gives NaN.
inline vf silu_fast(vf x) { return x * reciprocal(1.0f + exp_fast(vmin(-x, splat(80.0f)))); }

// Lanes [0, count) from p (nullptr: zeros), the rest zero so padded lanes stay finite.
inline vf load_lanes(const float* p, int64_t count, float fill) {
  alignas(64) float tmp[W];
  for (int c = 0; c < W; ++c) tmp[c] = (p != nullptr && c < count) ? p[c] : fill;
  return load(tmp);
}

// Transposes W rows of W floats in place, in log2(W) rounds: round k swaps the off-diagonal k x k
// blocks of every 2k x 2k block, each swap one two-vector shuffle a row.
template <int k>
inline void transpose_round(vf* rows) {
  if constexpr (k >= 1) {
    vi take_low, take_high;  // shuffle indices; >= W picks from the second vector
    for (int j = 0; j < W; ++j) {
      take_low[j] = (j & k) == 0 ? j : W + j - k;
      take_high[j] = (j & k) == 0 ? j + k : W + j;
    }
    for (int i = 0; i < W; ++i) {
      if (i & k) continue;
      const vf a = rows[i], b = rows[i + k];
      rows[i] = __builtin_shuffle(a, b, take_low);
      rows[i + k] = __builtin_shuffle(a, b, take_high);
    }
    transpose_round<k / 2>(rows);
  }
}

// dst[t * W + c] = src[c * stride_d + t] (time stride 1) for t < steps; lanes c >= count are zero.
// T: float or uint16_t (bfloat16), read as floats.
template <typename T>
inline void load_rows_transposed(const T* src, int64_t stride_d, int64_t count, int steps, float* dst) {
  int t0 = 0;
  for (; t0 + W <= steps; t0 += W) {
    vf rows[W];
    for (int c = 0; c < W; ++c) rows[c] = c < count ? load_as_float(src + c * stride_d + t0) : vf{};
    transpose_round<W / 2>(rows);
    for (int t = 0; t < W; ++t) store(dst + (t0 + t) * W, rows[t]);
  }
  for (int c = 0; c < W; ++c) {
    for (int t = t0; t < steps; ++t) dst[t * W + c] = c < count ? as_float(src[c * stride_d + t]) : 0.0f;
  }
}

// dst[t * W + c] = src[c * stride_d + t * stride_t] for t < steps; lanes c >= count are zero. Inputs
// laid out (batch, L, Di), as a model's (B, L, C) activations transposed, have stride_d == 1 and need
// no transposing; time-contiguous rows go through W x W in-register transposes.
template <typename T>
inline void load_tile(const T* src, int64_t stride_d, int64_t stride_t, int64_t count, int steps, float* dst) {
  if (stride_t == 1) {
    load_rows_transposed(src, stride_d, count, steps, dst);
  } else if (stride_d == 1 && count == W) {
    for (int t = 0; t < steps; ++t) store(dst + t * W, load_as_float(src + t * stride_t));
  } else {
    for (int t = 0; t < steps; ++t) {
      for (int c = 0; c < W; ++c) dst[t * W + c] = c < count ? as_float(src[c * stride_d + t * stride_t]) : 0.0f;
    }
  }
}

// The tile of `in` from (b, d0, t0): load_tile in the input's own element type.
inline void load_input_tile(const TimeInput& in, int64_t b, int64_t d0, int64_t t0, int64_t count, int steps,
                            float* dst) {
  const int64_t offset = b * in.stride[0] + d0 * in.stride[1] + t0 * in.stride[2];
  if (in.bf16) {
    load_tile(static_cast<const uint16_t*>(in.data) + offset, in.stride[1], in.stride[2], count, steps, dst);
  } else {
    load_tile(static_cast<const float*>(in.data) + offset, in.stride[1], in.stride[2], count, steps, dst);
  }
}

// dst[c * stride + t] = src[t * W + c] for c < count, t < steps.
inline void store_tile(const float* src, int64_t stride, int64_t count, int steps, float* dst) {
  int t0 = 0;
  for (; t0 + W <= steps; t0 += W) {
    vf rows[W];
    for (int t = 0; t < W; ++t) rows[t] = load(src + (t0 + t) * W);
    transpose_round<W / 2>(rows);
    for (int c = 0; c < count; ++c) store(dst + c * stride + t0, rows[c]);
  }
  for (int c = 0; c < count; ++c) {
    for (int t = t0; t < steps; ++t) dst[c * stride + t] = src[t * W + c];
  }
}

// Reverses the order of the first `steps` rows of a (kTile, W) tile: time order <-> scan order.
inline void reverse_rows(float* tile, int steps) {
  for (int i = 0, j = steps - 1; i < j; ++i, --j) {
    const vf a = load(tile + i * W);
    store(tile + i * W, load(tile + j * W));
    store(tile + j * W, a);
  }
}

struct Tiles {
  alignas(64) float u[kTile * W];
  alignas(64) float delta[kTile * W];
  alignas(64) float z[kTile * W];
  alignas(64) float y[kTile * W];
};

// Loads the tile of u and delta from time t0 (delta with bias and softplus applied) for channels
// [d0, d0 + count), rows in scan order.
inline void load_inputs(const ScanProblem& p, int64_t b, int64_t d0, int64_t count, int64_t t0, int steps,
                        vf delta_bias, Tiles& tiles) {
  load_input_tile(p.u, b, d0, t0, count, steps, tiles.u);
  load_input_tile(p.delta, b, d0, t0, count, steps, tiles.delta);
  if (p.reverse) {
    reverse_rows(tiles.u, steps);
    reverse_rows(tiles.delta, steps);
  }
  for (int t = 0; t < steps; ++t) {
    vf dt = load(tiles.delta + t * W) + delta_bias;
    if (p.delta_softplus) dt = softplus_fast(dt);
    store(tiles.delta + t * W, dt);
  }
}

// Software prefetch of the next tile of u, delta, z and y, a few cache lines per time step of the
// current tile. Why: the hardware prefetchers follow a few dozen streams, one per 4 KiB page; a block
// reads W rows of each input at once, and an input with channel stride 1 (the model's delta and z)
// touches a new page every step or two, which evicts the streams of the others. Without this, at the
// MUSE shape with the model's layout, the kernel took 1.8x as long (17 ms vs 9.6 ms on one core).
struct Prefetcher {
  struct Stream {
    const char* first;   // element (b, d0, t0) of the next tile
    int64_t row_stride;  // bytes from one row to the next
    int lines_per_row, rows;  // rows: channels (time stride 1) or time steps (channel stride 1)
  };
  Stream streams[4];
  int n_streams = 0;
  int per_step = 0;  // lines per stream per time step of the current tile

  // `element` bytes an element (4 for fp32, 2 for bf16); strides in elements.
  void add(const void* base, int element, const int64_t* stride, int64_t b, int64_t d0, int64_t count, int64_t t0,
           int steps) {
    if (base == nullptr || steps == 0) return;
    Stream& s = streams[n_streams];
    s.first = static_cast<const char*>(base) + element * (b * stride[0] + d0 * stride[1] + t0 * stride[2]);
    if (stride[2] == 1) {
      s.row_stride = element * stride[1];
      s.lines_per_row = steps * element / 64 + 2;  // +1 for an unaligned start, +1 for the rounding down
      s.rows = static_cast<int>(count);
    } else if (stride[1] == 1) {
      s.row_stride = element * stride[2];
      s.lines_per_row = static_cast<int>(count) * element / 64 + 2;
      s.rows = steps;
    } else {
      return;  // scattered: nothing worth prefetching
    }
    ++n_streams;
  }

  void add(const TimeInput& in, int64_t b, int64_t d0, int64_t count, int64_t t0, int steps) {
    add(in.data, in.bf16 ? 2 : 4, in.stride, b, d0, count, t0, steps);
  }

  // Lines [t * per_step, (t + 1) * per_step) of each stream. Always inlined: GCC deems a function that
  // only prefetches free of effects and deletes the calls to it.
  __attribute__((always_inline)) void step(int t) const {
    for (int i = 0; i < n_streams; ++i) {
      const Stream& s = streams[i];
      for (int line = t * per_step; line < (t + 1) * per_step && line < s.rows * s.lines_per_row; ++line) {
        const int row = line / s.lines_per_row, offset = 64 * (line % s.lines_per_row);
        __builtin_prefetch(s.first + row * s.row_stride + offset);
      }
    }
  }
};

// The prefetcher for the tile of `next_steps` steps from time t0 of channels [d0, d0 + count), spread
// over the `steps` steps of the current tile.
inline Prefetcher prefetch_tile(const ScanProblem& p, int64_t b, int64_t d0, int64_t count, int64_t t0,
                                int next_steps, int steps) {
  Prefetcher pf;
  pf.add(p.u, b, d0, count, t0, next_steps);
  pf.add(p.delta, b, d0, count, t0, next_steps);
  pf.add(p.z, b, d0, count, t0, next_steps);
  const int64_t y_stride[3] = {p.channels * p.length, p.length, 1};
  pf.add(p.y, 4, y_stride, b, d0, count, t0, next_steps);
  int most = 0;
  for (int i = 0; i < pf.n_streams; ++i) {
    const int lines = pf.streams[i].rows * pf.streams[i].lines_per_row;
    most = lines > most ? lines : most;
  }
  pf.per_step = (most + steps - 1) / steps;
  return pf;
}

// The recurrence over one tile: h = exp(delta A) h + delta u B_t; tiles.y[t] = sum_n C_t[n] h[n].
// NS > 0 fixes the state size at compile time: the loop over states unrolls and h lives in registers
// (copied in and out once a tile).
template <int NS>
inline void scan_tile(const float* Bt, const float* Ct, int64_t bc_step, int n_state, int steps, const vf* A2,
                      vf* h_saved, const Prefetcher& prefetch, Tiles& tiles) {
  const int n_count = NS > 0 ? NS : n_state;
  vf h_local[NS > 0 ? NS : 1];
  vf* h = NS > 0 ? h_local : h_saved;
  for (int n = 0; NS > 0 && n < NS; ++n) h_local[n] = h_saved[n];
  for (int t = 0; t < steps; ++t) {
    prefetch.step(t);
    const vf dt = load(tiles.delta + t * W);
    const vf du = dt * load(tiles.u + t * W);
    const float* b_t = Bt + t * bc_step;  // bc_step: +-N, the B and C of step t in scan order
    const float* c_t = Ct + t * bc_step;
    vf acc = {};
#pragma GCC unroll 16
    for (int n = 0; n < n_count; ++n) {
      h[n] = exp2_fast(dt * A2[n]) * h[n] + du * b_t[n];
      acc += h[n] * c_t[n];
    }
    store(tiles.y + t * W, acc);
  }
  for (int n = 0; NS > 0 && n < NS; ++n) h_saved[n] = h_local[n];
}

// y = (y + D u) * silu(z) over one tile, back in time order, then into its (channel, time) rows (added
// to what is there when accumulating). The tile starts at time t0.
inline void finish_tile(const ScanProblem& p, int64_t b, int64_t d0, int64_t count, int64_t t0, int steps,
                        vf D, Tiles& tiles) {
  const bool gated = p.z.data != nullptr;
  if (gated) {
    load_input_tile(p.z, b, d0, t0, count, steps, tiles.z);
    if (p.reverse) reverse_rows(tiles.z, steps);
  }
  for (int t = 0; t < steps; ++t) {
    vf y = load(tiles.y + t * W) + D * load(tiles.u + t * W);
    if (gated) y *= silu_fast(load(tiles.z + t * W));
    store(tiles.y + t * W, y);
  }
  if (p.reverse) reverse_rows(tiles.y, steps);
  float* y_rows = p.y + (b * p.channels + d0) * p.length + t0;
  if (p.accumulate) {
    load_tile(y_rows, p.length, 1, count, steps, tiles.z);  // tiles.z is free again
    for (int t = 0; t < steps; ++t) store(tiles.y + t * W, load(tiles.y + t * W) + load(tiles.z + t * W));
  }
  store_tile(tiles.y, p.length, count, steps, y_rows);
}

// One block of up to W channels: its constants, and its state between tiles.
struct Block {
  int64_t d0 = 0, count = 0;
  vf delta_bias = {}, D = {};
  vf* A2 = nullptr;  // (N,) vectors: A log2(e) of the block's channels
  vf* h = nullptr;   // (N,) vectors: the state
};

inline void init_block(const ScanProblem& p, int n_state, vf* storage, Block& block) {
  block.A2 = storage;
  block.h = storage + n_state;
  const int64_t d0 = block.d0, count = block.count;
  for (int n = 0; n < n_state; ++n) {
    alignas(64) float a[W];
    // In double, so that A log2(e) is rounded once: a per-channel bias here would be systematic.
    for (int c = 0; c < W; ++c) a[c] = c < count ? static_cast<float>(p.A[(d0 + c) * n_state + n] * kLog2eD) : 0.0f;
    block.A2[n] = load(a);
    block.h[n] = vf{};
  }
  block.delta_bias = load_lanes(p.delta_bias ? p.delta_bias + d0 : nullptr, count, 0.0f);
  block.D = load_lanes(p.D ? p.D + d0 : nullptr, count, 0.0f);
}

inline void save_last_state(const ScanProblem& p, int64_t b, int n_state, const Block& block) {
  for (int n = 0; n < n_state; ++n) {
    alignas(64) float lanes[W];
    store(lanes, block.h[n]);
    for (int c = 0; c < block.count; ++c) p.last_state[(b * p.channels + block.d0 + c) * n_state + n] = lanes[c];
  }
}

// Steps in the tile that starts s0 steps into a sequence of L (0 past the end).
inline int tile_steps(int64_t L, int64_t s0) { return static_cast<int>(s0 >= L ? 0 : (L - s0 < kTile ? L - s0 : kTile)); }

// Channels [d0, d0 + count), count <= W, of batch item b, over the whole sequence, tile by tile.
template <int NS>
void scan_block_impl(const ScanProblem& p, int64_t b, int64_t d0, int64_t count) {
  const int n_state = NS > 0 ? NS : static_cast<int>(p.dstate);
  const int64_t L = p.length;
  const int64_t group = d0 / (p.channels / p.groups);
  const float* Bt = p.Bt + (b * p.groups + group) * L * n_state;
  const float* Ct = p.Ct + (b * p.groups + group) * L * n_state;

  vf* storage = new vf[2 * n_state];
  Block block;
  block.d0 = d0;
  block.count = count;
  init_block(p, n_state, storage, block);
  Tiles tiles;
  for (int64_t s0 = 0; s0 < L; s0 += kTile) {  // s: steps in scan order; t: time
    const int steps = tile_steps(L, s0);
    const int64_t t0 = p.reverse ? L - s0 - steps : s0;
    load_inputs(p, b, d0, count, t0, steps, block.delta_bias, tiles);
    const int next_steps = tile_steps(L, s0 + kTile);
    const int64_t next_t0 = p.reverse ? t0 - next_steps : s0 + kTile;
    const Prefetcher prefetch = prefetch_tile(p, b, d0, count, next_t0, next_steps, steps);
    const int64_t first = p.reverse ? t0 + steps - 1 : t0, bc_step = p.reverse ? -n_state : n_state;
    scan_tile<NS>(Bt + first * n_state, Ct + first * n_state, bc_step, n_state, steps, block.A2, block.h,
                  prefetch, tiles);
    finish_tile(p, b, d0, count, t0, steps, block.D, tiles);
  }
  if (p.last_state != nullptr) save_last_state(p, b, n_state, block);
  delete[] storage;
}

}  // namespace

void scan_block(const ScanProblem& p, int64_t b, int64_t d0, int64_t count) {
  if (p.dstate == kMaxFixedState) {
    scan_block_impl<kMaxFixedState>(p, b, d0, count);
  } else {
    scan_block_impl<0>(p, b, d0, count);
  }
}

}  // namespace MUSE_ISA_NAMESPACE
}  // namespace muse
