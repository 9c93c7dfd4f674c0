// muse::selective_scan: the op's schema (defined once, here) and its CPU kernel.
//
// The math is muse_infer/ops/reference.py's selective_scan_ref; the vectorised loop is in
// scan_kernel_impl.h. This file checks arguments, converts them to the kernel's fp32 layout, picks the
// widest kernel the CPU runs, and splits the work over (batch, block of channels) with at::parallel_for.
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

// fp32 in the input's own layout: the kernel reads any strides (fast for time or channel stride 1).
at::Tensor as_float(const at::Tensor& t) { return t.to(at::kFloat); }

void set_strides(int64_t* dst, const at::Tensor& t) {
  for (int i = 0; i < 3; ++i) dst[i] = t.stride(i);
}

// B or C as (batch, groups, L, N) fp32: the kernel reads all N states of one time step together.
at::Tensor as_time_major(const at::Tensor& bc) {
  const at::Tensor grouped = bc.dim() == 3 ? bc.unsqueeze(1) : bc;
  return grouped.to(at::kFloat).transpose(2, 3).contiguous();
}

at::Tensor as_vector(const std::optional<at::Tensor>& t) {
  return t ? t->to(at::kFloat).contiguous() : at::Tensor();
}

const float* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

// Work items: (batch, group, block of `width` channels); blocks never straddle a group of B/C. (Wider
// items, several blocks taking turns on each time tile, measured slower.)
void run_parallel(const ScanProblem& p, const Kernel& kernel) {
  const int64_t per_group = p.channels / p.groups;
  const int64_t blocks_per_group = (per_group + kernel.width - 1) / kernel.width;
  at::parallel_for(0, p.batch * p.groups * blocks_per_group, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t row = item / blocks_per_group;  // batch * groups + group
      const int64_t first = (item % blocks_per_group) * kernel.width;
      const int64_t group = row % p.groups;
      kernel.fn(p, row / p.groups, group * per_group + first, std::min(kernel.width, per_group - first));
    }
  });
}

std::tuple<at::Tensor, at::Tensor> scan_cpu(const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A_in,
                                            const at::Tensor& B_in, const at::Tensor& C_in,
                                            const std::optional<at::Tensor>& D_in,
                                            const std::optional<at::Tensor>& z_in,
                                            const std::optional<at::Tensor>& delta_bias_in, bool delta_softplus,
                                            bool want_state) {
  const int64_t groups = check_arguments(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, delta_bias_in);
  const at::Tensor u = as_float(u_in), delta = as_float(delta_in);
  const at::Tensor z = z_in ? as_float(*z_in) : at::Tensor();
  const at::Tensor A = A_in.to(at::kFloat).contiguous();
  const at::Tensor Bt = as_time_major(B_in), Ct = as_time_major(C_in);
  const at::Tensor D = as_vector(D_in), delta_bias = as_vector(delta_bias_in);

  ScanProblem p;
  p.batch = u.size(0), p.channels = u.size(1), p.length = u.size(2), p.dstate = A.size(1), p.groups = groups;
  p.u = u.const_data_ptr<float>(), p.delta = delta.const_data_ptr<float>();
  set_strides(p.u_stride, u);
  set_strides(p.delta_stride, delta);
  if (z.defined()) {
    p.z = z.const_data_ptr<float>();
    set_strides(p.z_stride, z);
  }
  p.A = A.const_data_ptr<float>(), p.Bt = Bt.const_data_ptr<float>(), p.Ct = Ct.const_data_ptr<float>();
  p.D = data_or_null(D), p.delta_bias = data_or_null(delta_bias), p.delta_softplus = delta_softplus;

  at::Tensor y = at::empty({p.batch, p.channels, p.length}, u.options());
  at::Tensor state = want_state ? at::zeros({p.batch, p.channels, p.dstate}, u.options()) : at::Tensor();
  p.y = y.mutable_data_ptr<float>();
  p.last_state = want_state ? state.mutable_data_ptr<float>() : nullptr;

  if (p.batch * p.channels * p.length > 0) run_parallel(p, pick_kernel());
  const auto out_dtype = u_in.scalar_type();
  return {y.to(out_dtype), want_state ? state.to(out_dtype) : state};
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

}  // namespace
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
}

TORCH_LIBRARY_IMPL(muse, CPU, m) {
  m.impl("selective_scan", &muse::selective_scan_cpu);
  m.impl("selective_scan_with_state", &muse::selective_scan_with_state_cpu);
}

// A Python module so that `import muse_infer._C` loads the library (which runs the registrations
// above); cpu_isa() names the kernel build the next call will use.
namespace {
PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(muse::pick_kernel().isa); }

PyMethodDef kMethods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "Instruction set of the CPU scan kernel: avx512, avx2 or baseline."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C", "muse::selective_scan CPU kernel.", -1, kMethods};
}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&kModule); }
