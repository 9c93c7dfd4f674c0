// The scan kernel for CPUs with AVX-512 (F, DQ, BW, VL), chosen at run time (see pick_kernel in
// selective_scan.cpp).
#include "scan_problem.h"

#if defined(MUSE_SCAN_MULTIVERSION)
#include <immintrin.h>
#endif

#if defined(MUSE_SCAN_MULTIVERSION)
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi,bmi2,f16c")
#define MUSE_VEC_WIDTH 16
#define MUSE_SCAN_AVX512_EXP2 1
#define MUSE_ISA_NAMESPACE avx512
#include "scan_kernel_impl.h"
#include "conv_kernel_impl.h"
#include "winograd_kernel_impl.h"
#endif
