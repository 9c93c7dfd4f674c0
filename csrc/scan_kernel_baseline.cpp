// The scan kernel for any CPU the package is built for (x86-64-v2 with setup.py's flags: SSE4.2).
#include "scan_problem.h"

#define MUSE_VEC_WIDTH 4
#define MUSE_ISA_NAMESPACE baseline
#include "scan_kernel_impl.h"
#include "conv_kernel_impl.h"
#include "winograd_kernel_impl.h"
