// muse::selective_scan: the op's schema (defined once, here) and its CPU kernel.
//
// The math is muse_infer/ops/reference.py's selective_scan_ref; the vectorised loop is in
// scan_kernel_impl.h. This file checks arguments, hands the kernel u, delta and z as they are (fp32 or
// bf16, any strides; fp16 converted to fp32) and B, C time-major in fp32, picks the widest kernel the
// CPU runs, and shares the work, (batch, block of channels) items, among threads.
// Python side (fake kernel, CUDA kernel, autograd refusal): muse_infer/ops/op.py.
#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "parallel_items.h"
#include "scan_problem.h"

namespace muse {
namespace {

constexpr const char* kOpName = "muse::selective_scan";

struct Kernel {
  ScanBlockFn fn;
  int64_t width;
  const char* isa;
};

bool cpu_supports(const char* feature) {
#if defined(MUSE_SCAN_MULTIVERSION)
  __builtin_cpu_init();
  // __builtin_cpu_supports needs a literal, hence the chain.
  if (std::strcmp(feature, "avx512") == 0) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }
  if (std::strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  (void)feature;
  return false;
}

// The widest kernel this CPU runs. MUSE_SCAN_CPU_ISA=avx2|baseline caps it (tests use it to check the
// narrower builds on a wide machine); a cap above what the CPU has is ignored.
Kernel pick_kernel() {
  const char* cap_env = std::getenv("MUSE_SCAN_CPU_ISA");
  const std::string cap = cap_env ? cap_env : "";
#if defined(MUSE_SCAN_MULTIVERSION)
  if ((cap.empty() || cap == "avx512") && cpu_supports("avx512")) return {avx512::scan_block, avx512::kWidth, "avx512"};
  if ((cap.empty() || cap == "avx512" || cap == "avx2") && cpu_supports("avx2")) {
    return {avx2::scan_block, avx2::kWidth, "avx2"};
  }
#endif
  return {baseline::scan_block, baseline::kWidth, "baseline"};
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name, const char* layout) {
  TORCH_CHECK(t.sizes() == expected, kOpName, ": ", name, " must have shape ", layout, " = ", expected, ", got ",
              t.sizes());
}

void check_dtype_device(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), kOpName, ": ", name, " is on ", t.device(), "; this kernel runs on CPU");
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, kOpName, ": ", name,
              " has dtype ", dtype, "; the op takes float32, float16 or bfloat16 (selective_scan_ref takes any)");
}

// Checks every argument against u's (batch, Di, L) and A's (Di, N); returns the number of groups of B/C.
int64_t check_arguments(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                        const std::optional<at::Tensor>& delta_bias) {
  TORCH_CHECK(u.dim() == 3, kOpName, ": u must be 3-D (batch, Di, L), got shape ", u.sizes());
  TORCH_CHECK(A.dim() == 2, kOpName, ": A must be 2-D (Di, N), got shape ", A.sizes());
  const int64_t batch = u.size(0), channels = u.size(1), length = u.size(2), dstate = A.size(1);
  check_shape(delta, u.sizes(), "delta", "(batch, Di, L)");
  check_shape(A, {channels, dstate}, "A", "(Di, N)");
  TORCH_CHECK(B.dim() == 3 || B.dim() == 4, kOpName, ": B must be (batch, N, L) or (batch, groups, N, L), got shape ",
              B.sizes());
  const int64_t groups = B.dim() == 4 ? B.size(1) : 1;
  TORCH_CHECK(groups >= 1 && channels % groups == 0, kOpName, ": B has ", groups, " groups, which does not divide Di=",
              channels);
  const auto bc_shape = B.dim() == 4 ? std::vector<int64_t>{batch, groups, dstate, length}
                                     : std::vector<int64_t>{batch, dstate, length};
  const char* bc_layout = B.dim() == 4 ? "(batch, groups, N, L)" : "(batch, N, L)";
  check_shape(B, bc_shape, "B", bc_layout);
  check_shape(C, bc_shape, "C", bc_layout);
  for (const auto& [t, name] : {std::pair{u, "u"}, {delta, "delta"}, {A, "A"}, {B, "B"}, {C, "C"}}) {
    check_dtype_device(t, name);
  }
  for (const auto& [t, name] : {std::pair{D, "D"}, {delta_bias, "delta_bias"}}) {
    if (!t) continue;
    check_shape(*t, {channels}, name, "(Di,)");
    check_dtype_device(*t, name);
  }
  if (z) {
    check_shape(*z, u.sizes(), "z", "(batch, Di, L)");
    check_dtype_device(*z, "z");
  }
  return groups;
}

// What the kernel reads of u, delta or z: fp32 and bf16 as they are (any strides; fast for time or
// channel stride 1), fp16 converted to fp32 in its own layout. Why not convert bf16 too: a BiMamba
// block would make six fp32 copies (6 MB each at the MUSE shape), whose fresh pages cost more than
// the scan (52 ms against 24 ms a block, one thread, measured).
at::Tensor as_readable(const at::Tensor& t) { return t.scalar_type() == at::kHalf ? t.to(at::kFloat) : t; }

TimeInput time_input(const at::Tensor& t) {
  TimeInput in;
  in.data = t.const_data_ptr();
  for (int i = 0; i < 3; ++i) in.stride[i] = t.stride(i);
  in.bf16 = t.scalar_type() == at::kBFloat16;
  return in;
}

// B or C as (batch, groups, L, N) fp32: the kernel reads all N states of one time step together.
// Transposed by hand rather than by .contiguous(): torch's copy of these ~50k floats runs an OpenMP
// region, which on a busy machine waits for its threads as the scan used to (parallel_items.h), for
// a copy that takes ~15 us on one thread.
at::Tensor as_time_major(const at::Tensor& bc) {
  const at::Tensor grouped = (bc.dim() == 3 ? bc.unsqueeze(1) : bc).to(at::kFloat);
  const int64_t rows = grouped.size(0) * grouped.size(1), dstate = grouped.size(2), length = grouped.size(3);
  at::Tensor out = at::empty({grouped.size(0), grouped.size(1), length, dstate}, grouped.options());
  const float* src = grouped.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  const int64_t s0 = grouped.stride(0), s1 = grouped.stride(1), s2 = grouped.stride(2), s3 = grouped.stride(3);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + (r / grouped.size(1)) * s0 + (r % grouped.size(1)) * s1;
    for (int64_t t = 0; t < length; ++t) {
      for (int64_t n = 0; n < dstate; ++n) *dst++ = row[n * s2 + t * s3];
    }
  }
  return out;
}

at::Tensor as_vector(const std::optional<at::Tensor>& t) {
  return t ? t->to(at::kFloat).contiguous() : at::Tensor();
}

const float* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

// Calls run_block(b, d0, count) for each work item: (batch, group, block of `width` channels); blocks
// never straddle a group of B/C. (Wider items, several blocks taking turns on each time tile, measured
// slower; narrower ones would leave vector lanes empty.) `passes`: scans an item runs.
template <typename F>
void for_each_block(const ScanProblem& p, int64_t width, int64_t passes, const F& run_block) {
  const int64_t per_group = p.channels / p.groups;
  const int64_t blocks_per_group = (per_group + width - 1) / width;
  const int64_t n_items = p.batch * p.groups * blocks_per_group;
  // A thread for each ~0.2 ms of work (2^16 (step, state) of a block, ~3 ns each): waking one costs
  // tens of us. None from inside another parallel region (a caller's at::parallel_for).
  const int64_t work = n_items * passes * p.length * p.dstate;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), 1 + work / (int64_t{1} << 16));
  const int helpers = at::in_parallel_region() ? 0 : static_cast<int>(threads - 1);
  parallel_items(n_items, helpers, [&](int64_t item) {
    const int64_t row = item / blocks_per_group;  // batch * groups + group
    const int64_t first = (item % blocks_per_group) * width;
    const int64_t group = row % p.groups;
    run_block(row / p.groups, group * per_group + first, std::min(width, per_group - first));
  });
}

// One direction's arguments converted for the kernel (the tensors keep the problem's pointers alive).
struct Prepared {
  at::Tensor u, delta, z, A, Bt, Ct, D, delta_bias;
  ScanProblem p;
};

Prepared prepare(const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A_in, const at::Tensor& B_in,
                 const at::Tensor& C_in, const std::optional<at::Tensor>& D_in, const std::optional<at::Tensor>& z_in,
                 const std::optional<at::Tensor>& delta_bias_in, bool delta_softplus) {
  const int64_t groups = check_arguments(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, delta_bias_in);
  Prepared in;
  in.u = as_readable(u_in), in.delta = as_readable(delta_in), in.z = z_in ? as_readable(*z_in) : at::Tensor();
  in.A = A_in.to(at::kFloat).contiguous();
  in.Bt = as_time_major(B_in), in.Ct = as_time_major(C_in);
  in.D = as_vector(D_in), in.delta_bias = as_vector(delta_bias_in);

  ScanProblem& p = in.p;
  p.batch = in.u.size(0), p.channels = in.u.size(1), p.length = in.u.size(2), p.dstate = in.A.size(1);
  p.groups = groups;
  p.u = time_input(in.u), p.delta = time_input(in.delta);
  if (in.z.defined()) p.z = time_input(in.z);
  p.A = in.A.const_data_ptr<float>(), p.Bt = in.Bt.const_data_ptr<float>(), p.Ct = in.Ct.const_data_ptr<float>();
  p.D = data_or_null(in.D), p.delta_bias = data_or_null(in.delta_bias), p.delta_softplus = delta_softplus;
  return in;
}

void run(ScanProblem& p, const at::Tensor& y, const at::Tensor& state) {
  p.y = y.mutable_data_ptr<float>();
  p.last_state = state.defined() ? state.mutable_data_ptr<float>() : nullptr;
  if (p.batch * p.channels * p.length == 0) return;
  const Kernel kernel = pick_kernel();
  for_each_block(p, kernel.width, 1, [&](int64_t b, int64_t d0, int64_t count) { kernel.fn(p, b, d0, count); });
}

std::tuple<at::Tensor, at::Tensor> scan_cpu(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C,
                                            const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                            const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                            bool want_state) {
  Prepared in = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  const ScanProblem& p = in.p;
  at::Tensor y = at::empty({p.batch, p.channels, p.length}, in.u.options().dtype(at::kFloat));
  at::Tensor state = want_state ? at::zeros({p.batch, p.channels, p.dstate}, in.u.options().dtype(at::kFloat)) : at::Tensor();
  run(in.p, y, state);
  return {y.to(u.scalar_type()), want_state ? state.to(u.scalar_type()) : state};
}

at::Tensor selective_scan_cpu(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& C, const std::optional<at::Tensor>& D,
                              const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                              bool delta_softplus) {
  return std::get<0>(scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, false));
}

std::tuple<at::Tensor, at::Tensor> selective_scan_with_state_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  return scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, true);
}

// Both directions of a BiMamba block, every input in natural time order: the forward scan, plus the
// backward one run from step L-1 down to 0 with each output added at its own step. Equal to
// scan(forward) + flip(scan(flip(backward inputs))) without the flipped copies; the sum is rounded once.
at::Tensor selective_scan_bidirectional_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, const at::Tensor& u_b, const at::Tensor& delta_b,
    const at::Tensor& A_b, const at::Tensor& B_b, const at::Tensor& C_b, const std::optional<at::Tensor>& D_b,
    const std::optional<at::Tensor>& z_b, const std::optional<at::Tensor>& delta_bias_b, bool delta_softplus) {
  TORCH_CHECK(u_b.sizes() == u.sizes() && A_b.sizes() == A.sizes(), kOpName,
              "_bidirectional: the directions must agree: u ", u.sizes(), " vs u_b ", u_b.sizes(), ", A ", A.sizes(),
              " vs A_b ", A_b.sizes());
  for (const auto& [f, b, name] : {std::tuple{D, D_b, "D"}, {z, z_b, "z"}, {delta_bias, delta_bias_b, "delta_bias"}}) {
    TORCH_CHECK(f.has_value() == b.has_value(), kOpName, "_bidirectional: give ", name, " for both directions or for neither");
  }
  Prepared forward = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  Prepared backward = prepare(u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b, delta_softplus);
  backward.p.reverse = backward.p.accumulate = true;
  const ScanProblem& p = forward.p;
  at::Tensor y = at::empty({p.batch, p.channels, p.length}, forward.u.options().dtype(at::kFloat));
  forward.p.y = backward.p.y = y.mutable_data_ptr<float>();
  if (p.batch * p.channels * p.length > 0) {
    // One work list for both directions, an item a block: its forward scan, then its backward one,
    // which adds to the y the forward wrote (still in cache) and to nothing another item writes. Two
    // lists, one a direction, would wait twice for the slowest thread.
    // Only when both directions group B/C alike: a block must not straddle a group of either.
    const Kernel kernel = pick_kernel();
    if (forward.p.groups == backward.p.groups) {
      for_each_block(p, kernel.width, 2, [&](int64_t b, int64_t d0, int64_t count) {
        kernel.fn(forward.p, b, d0, count);
        kernel.fn(backward.p, b, d0, count);
      });
    } else {
      for (const ScanProblem* direction : {&forward.p, &backward.p}) {
        for_each_block(*direction, kernel.width, 1,
                       [&](int64_t b, int64_t d0, int64_t count) { kernel.fn(*direction, b, d0, count); });
      }
    }
  }
  return y.to(u.scalar_type());
}

}  // namespace

ConvRowsFn pick_conv_kernel() {
  const Kernel kernel = pick_kernel();
#if defined(MUSE_SCAN_MULTIVERSION)
  if (kernel.fn == avx512::scan_block) return avx512::conv_rows;
  if (kernel.fn == avx2::scan_block) return avx2::conv_rows;
#endif
  (void)kernel;
  return baseline::conv_rows;
}

WinogradKernels pick_winograd_kernels() {
  const Kernel kernel = pick_kernel();
#if defined(MUSE_SCAN_MULTIVERSION)
  if (kernel.fn == avx512::scan_block) return {avx512::winograd_input, avx512::winograd_output};
  if (kernel.fn == avx2::scan_block) return {avx2::winograd_input, avx2::winograd_output};
#endif
  (void)kernel;
  return {baseline::winograd_input, baseline::winograd_output};
}

}  // namespace muse

// The schemas; muse_infer/ops/op.py holds the same text for builds without this library (a test keeps
// the two equal). Other files that add ops to `muse` must use TORCH_LIBRARY_FRAGMENT.
TORCH_LIBRARY(muse, m) {
  m.set_python_module("muse_infer.ops.op");  // where the fake kernels live, for torch.export / compile
  m.def(
      "selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
      "Tensor? delta_bias=None, bool delta_softplus=False) -> Tensor");
  m.def(
      "selective_scan_with_state(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, "
      "Tensor? z=None, Tensor? delta_bias=None, bool delta_softplus=False) -> (Tensor, Tensor)");
  m.def(
      "selective_scan_bidirectional(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, Tensor u_b, Tensor delta_b, Tensor A_b, Tensor B_b, Tensor C_b, Tensor? D_b, "
      "Tensor? z_b, Tensor? delta_bias_b, bool delta_softplus=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(muse, CPU, m) {
  m.impl("selective_scan", &muse::selective_scan_cpu);
  m.impl("selective_scan_with_state", &muse::selective_scan_with_state_cpu);
  m.impl("selective_scan_bidirectional", &muse::selective_scan_bidirectional_cpu);
}

// A Python module so that `import muse_infer._C` loads the library (which runs the registrations
// above); cpu_isa() names the kernel build the next call will use, threading_stats() counts the
// multi-threaded calls by the way they shared their items.
namespace {
PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(muse::pick_kernel().isa); }

PyObject* threading_stats(PyObject*, PyObject*) {
  const muse::ThreadingStats s = muse::threading_stats();
  return Py_BuildValue("{s:L,s:L,s:L}", "openmp_calls", static_cast<long long>(s.openmp_calls),
                       "helper_calls", static_cast<long long>(s.helper_calls),
                       "openmp_stalls", static_cast<long long>(s.openmp_stalls));
}

PyMethodDef kMethods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "Instruction set of the CPU scan kernel: avx512, avx2 or baseline."},
    {"threading_stats", threading_stats, METH_NOARGS,
     "Multi-threaded CPU scan calls so far: {openmp_calls, helper_calls, openmp_stalls} (csrc/parallel_items.h)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C", "muse::selective_scan CPU kernel.", -1, kMethods};
}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&kModule); }
