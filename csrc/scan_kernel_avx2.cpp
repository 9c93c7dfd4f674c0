// The scan kernel for CPUs with AVX2 and FMA, chosen at run time (see pick_kernel in selective_scan.cpp).
#include "scan_problem.h"

#if defined(MUSE_SCAN_MULTIVERSION)
#pragma GCC target("avx2,fma,bmi,bmi2,f16c")
#define MUSE_VEC_WIDTH 8
#define MUSE_ISA_NAMESPACE avx2
#include "scan_kernel_impl.h"
#include "conv_kernel_impl.h"
#include "winograd_kernel_impl.h"
#endif
