/* muse_infer._fit: Pillow's resampling of an RGB frame, bit for bit, computing only the pixels a
 * centre crop keeps.
 *
 * ``video.frames.fit_frame`` resizes a decoded frame with PIL (bicubic or bilinear, as torchvision's
 * Resize on PIL images) and keeps a centre crop: for a 640x360 frame PIL computes 398x224 pixels and
 * 44 % of them are thrown away, after unpacking the RGB frame into its 4-byte pixels. This module
 * does the same arithmetic as Pillow's libImaging/Resample.c (Pillow 13: the same coefficients, in
 * double precision, the same 22-bit fixed point, the same rounding of the intermediate image to 8
 * bits, the same order of the two passes) on packed RGB, for the kept pixels only. Every output pixel
 * depends only on its own coefficients and on the intermediate pixels under them, so the kept pixels
 * are the very bytes PIL gives; ``video.frames`` checks that against the installed Pillow before it
 * uses this module, and tests/test_fit_kernel.py on many sizes. The sums are integers, so the order
 * they are added in changes nothing: the passes run as vector arithmetic (VECTOR_CLONES), 3.5x
 * cheaper than PIL's fit of a 640x360 frame here.
 *
 * C written as C++ (torch's build compiles every extension with the C++ compiler), no torch here: decode
 * workers import only numpy, PIL and PyAV. Built without -ffast-math or FMA contraction, so that the
 * coefficients round as Pillow's do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

/* Each pass built for AVX-512 (x86-64-v4: 16 ints a vector in the vertical pass, 1.3-1.7x the AVX2
 * build's speed on a 2026 AMD EPYC; docs/benchmarks.md), AVX2, SSE4.1 (32-bit multiplies; SSE2 has
 * none, and emulating them made the blocks slower than a loop of taps) and the baseline, the CPU's best
 * chosen when the module loads. The sums are integers, so every build gives the same bytes. Why not
 * wider horizontal blocks for AVX-512 (LANES 16): measured 1.2-2x slower than 8 (their spans grow, and
 * the three 16-int accumulators spill). */
#if defined(__x86_64__) && defined(__GNUC__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "sse4.1", "default")))
#else
#define VECTOR_CLONES
#endif

enum { FILTER_BILINEAR = 0, FILTER_BICUBIC = 1 };

/* Pillow's filters, verbatim. */
static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

static double bicubic_filter(double x) {
#define a -0.5
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
#undef a
}

/* One axis' coefficients (Pillow's precompute_coeffs with the box [0, inSize], then
 * normalize_coeffs_8bpc): for output position i, taps bounds[2i] .. bounds[2i] + bounds[2i+1] - 1
 * of the input with weights kk[i * ksize + t]. */
typedef struct {
    int ksize;
    int *bounds;
    int *kk;
} Coeffs;

static void coeffs_free(Coeffs *c) {
    free(c->bounds);
    free(c->kk);
    c->bounds = NULL;
    c->kk = NULL;
}

static int coeffs_compute(Coeffs *c, int inSize, int outSize, int filter) {
    double (*f)(double) = filter == FILTER_BICUBIC ? bicubic_filter : bilinear_filter;
    double filter_support = filter == FILTER_BICUBIC ? 2.0 : 1.0;
    float in0 = 0.0f, in1 = (float)inSize; /* Pillow's box is float */
    double support, scale, filterscale;
    double *pre;
    int xx, x;

    filterscale = scale = (double)(in1 - in0) / outSize;
    if (filterscale < 1.0) filterscale = 1.0;
    support = filter_support * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    if (outSize > INT_MAX / (c->ksize * (int)sizeof(double))) return -1;
    pre = static_cast<double *>(malloc((size_t)outSize * c->ksize * sizeof(double)));
    c->kk = static_cast<int *>(malloc((size_t)outSize * c->ksize * sizeof(int)));
    c->bounds = static_cast<int *>(malloc((size_t)outSize * 2 * sizeof(int)));
    if (!pre || !c->kk || !c->bounds) {
        free(pre);
        coeffs_free(c);
        return -1;
    }
    double inv_filterscale = 1.0 / filterscale;
    for (xx = 0; xx < outSize; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > inSize) xmax = inSize;
        xmax -= xmin;
        double *k = &pre[xx * c->ksize];
        for (x = 0; x < xmax; x++) {
            double w = f((x + xmin - center + 0.5) * inv_filterscale);
            k[x] = w;
            ww += w;
        }
        if (ww != 0.0) {
            for (x = 0; x < xmax; x++) k[x] /= ww;
        }
        for (; x < c->ksize; x++) k[x] = 0;
        c->bounds[xx * 2 + 0] = xmin;
        c->bounds[xx * 2 + 1] = xmax;
    }
    for (x = 0; x < outSize * c->ksize; x++) {
        if (pre[x] < 0)
            c->kk[x] = (int)(-0.5 + pre[x] * (1 << PRECISION_BITS));
        else
            c->kk[x] = (int)(0.5 + pre[x] * (1 << PRECISION_BITS));
    }
    free(pre);
    return 0;
}

static inline unsigned char clip8(int in) {
    int v = in >> PRECISION_BITS; /* Pillow's clip8 table: below 0 -> 0, above 255 -> 255 */
    return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/* A packed RGB image: rows of `width` pixels, `stride` bytes apart. */
typedef struct {
    unsigned char *data;
    int width, height;
    Py_ssize_t stride;
} Plane;

/* The horizontal pass's coefficients for blocks of LANES output columns, as dense matrices: block b
 * reads the input pixels [base[b], base[b] + span[b]) and weighs pixel i for its column l with
 * weights[b][i][l] (0 where the column does not reach). Zeros add nothing to Pillow's integer sums, so
 * the sums are Pillow's, and each block is LANES-wide vector arithmetic instead of a loop of taps. */
enum { LANES = 8 };

typedef struct {
    int blocks;
    int *base, *span;
    Py_ssize_t *offset; /* block b's matrix: weights + offset[b], span[b] rows of LANES ints */
    int *weights;
} Blocks;

static void blocks_free(Blocks *b) {
    free(b->base);
    free(b->span);
    free(b->offset);
    free(b->weights);
}

/* Blocks for the output columns [col0, col0 + cols) of coefficients c; 0, or -1 without memory. */
static int blocks_compute(Blocks *b, const Coeffs *c, int col0, int cols) {
    b->blocks = (cols + LANES - 1) / LANES;
    b->base = static_cast<int *>(malloc(b->blocks * sizeof(int)));
    b->span = static_cast<int *>(malloc(b->blocks * sizeof(int)));
    b->offset = static_cast<Py_ssize_t *>(malloc(b->blocks * sizeof(Py_ssize_t)));
    b->weights = NULL;
    if (!b->base || !b->span || !b->offset) return -1;
    Py_ssize_t total = 0;
    for (int blk = 0; blk < b->blocks; blk++) {
        int first = col0 + blk * LANES, last = first + LANES < col0 + cols ? first + LANES : col0 + cols;
        int lo = INT_MAX, hi = 0;
        for (int xx = first; xx < last; xx++) {
            lo = c->bounds[xx * 2] < lo ? c->bounds[xx * 2] : lo;
            hi = c->bounds[xx * 2] + c->bounds[xx * 2 + 1] > hi ? c->bounds[xx * 2] + c->bounds[xx * 2 + 1] : hi;
        }
        b->base[blk] = lo;
        b->span[blk] = hi > lo ? hi - lo : 0;
        b->offset[blk] = total;
        total += (Py_ssize_t)b->span[blk] * LANES;
    }
    b->weights = static_cast<int *>(calloc(total > 0 ? total : 1, sizeof(int)));
    if (!b->weights) return -1;
    for (int blk = 0; blk < b->blocks; blk++) {
        int *w = b->weights + b->offset[blk];
        for (int l = 0; l < LANES && col0 + blk * LANES + l < col0 + cols; l++) {
            int xx = col0 + blk * LANES + l;
            int xmin = c->bounds[xx * 2], xmax = c->bounds[xx * 2 + 1];
            for (int x = 0; x < xmax; x++) w[(xmin + x - b->base[blk]) * LANES + l] = c->kk[xx * c->ksize + x];
        }
    }
    return 0;
}

/* Horizontal pass: out row r, columns [0, cols) = output columns [col0, col0 + cols) of the resize
 * (the blocks b were made for), from input row row0 + r, for rows [0, rows). */
VECTOR_CLONES static void pass_horizontal(
    const Plane *in, int row0, Plane *out, int rows, int cols, const Blocks *b) {
    for (int r = 0; r < rows; r++) {
        const unsigned char *line = in->data + (Py_ssize_t)(row0 + r) * in->stride;
        unsigned char *dst = out->data + (Py_ssize_t)r * out->stride;
        for (int blk = 0; blk < b->blocks; blk++) {
            int s0[LANES], s1[LANES], s2[LANES];
            for (int l = 0; l < LANES; l++) s0[l] = s1[l] = s2[l] = 1 << (PRECISION_BITS - 1);
            const unsigned char *p = line + (Py_ssize_t)b->base[blk] * 3;
            const int *w = b->weights + b->offset[blk];
            for (int i = 0; i < b->span[blk]; i++, p += 3, w += LANES) {
                int p0 = p[0], p1 = p[1], p2 = p[2];
                for (int l = 0; l < LANES; l++) {
                    s0[l] += p0 * w[l];
                    s1[l] += p1 * w[l];
                    s2[l] += p2 * w[l];
                }
            }
            int n = cols - blk * LANES < LANES ? cols - blk * LANES : LANES;
            unsigned char *d = dst + (Py_ssize_t)blk * LANES * 3;
            for (int l = 0; l < n; l++) {
                d[l * 3 + 0] = clip8(s0[l]);
                d[l * 3 + 1] = clip8(s1[l]);
                d[l * 3 + 2] = clip8(s2[l]);
            }
        }
    }
}

/* Vertical pass: out row r = output row row0 + r of the resize, from input rows shifted by
 * -in_row0 (the first input row held), bytes [byte0, byte0 + bytes) of each row; acc: bytes ints. */
VECTOR_CLONES static void pass_vertical(
    const Plane *in, int in_row0, Plane *out, int row0, int rows, Py_ssize_t byte0, Py_ssize_t bytes,
    const Coeffs *c, int *acc) {
    for (int r = 0; r < rows; r++) {
        int yy = row0 + r;
        int ymin = c->bounds[yy * 2] - in_row0, ymax = c->bounds[yy * 2 + 1];
        const int *k = &c->kk[yy * c->ksize];
        for (Py_ssize_t i = 0; i < bytes; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < ymax; y++) {
            const unsigned char *line = in->data + (Py_ssize_t)(ymin + y) * in->stride + byte0;
            int w = k[y];
            for (Py_ssize_t i = 0; i < bytes; i++) acc[i] += line[i] * w;
        }
        unsigned char *dst = out->data + (Py_ssize_t)r * out->stride;
        for (Py_ssize_t i = 0; i < bytes; i++) dst[i] = clip8(acc[i]);
    }
}

static void copy_rows(const Plane *in, int row0, int col0, Plane *out) {
    for (int r = 0; r < out->height; r++) {
        const unsigned char *line = in->data + (Py_ssize_t)(row0 + r) * in->stride + (Py_ssize_t)col0 * 3;
        memcpy(out->data + (Py_ssize_t)r * out->stride, line, (size_t)out->width * 3);
    }
}

/* The (crop_h, crop_w) window at (top, left) of `in` resized to (out_h, out_w), into `out`.
 * Returns 0, or -1 when memory ran out. */
static int fit(const Plane *in, int out_w, int out_h, int left, int top, Plane *out, int filter) {
    int W = in->width, H = in->height, cw = out->width, ch = out->height;
    int need_h = out_w != W, need_v = out_h != H;
    /* Pillow 13: the vertical pass first when the height shrinks more than twice as much as the width. */
    int horizontal_first = !((H - out_h) > 0 && (H - out_h) > (W - out_w) * 2);
    Coeffs hc = {0}, vc = {0};
    Blocks blocks = {0};
    int *acc = NULL;
    unsigned char *tmp = NULL;
    int status = -1;

    if (!need_h && !need_v) {
        copy_rows(in, top, left, out);
        return 0;
    }
    if (need_h && coeffs_compute(&hc, W, out_w, filter)) goto end;
    if (need_v && coeffs_compute(&vc, H, out_h, filter)) goto end;

    if (need_h && blocks_compute(&blocks, &hc, left, cw)) goto end;
    if (!need_v) { /* rows as they are: the horizontal pass alone, on the kept rows */
        pass_horizontal(in, top, out, ch, cw, &blocks);
        status = 0;
        goto end;
    }
    if (!need_h) { /* columns as they are: the vertical pass alone, on the kept columns */
        acc = static_cast<int *>(malloc((size_t)cw * 3 * sizeof(int)));
        if (!acc) goto end;
        pass_vertical(in, 0, out, top, ch, (Py_ssize_t)left * 3, (Py_ssize_t)cw * 3, &vc, acc);
        status = 0;
        goto end;
    }
    if (horizontal_first) {
        /* the input rows under the kept output rows, each resized horizontally to the kept columns */
        int first = vc.bounds[top * 2];
        int last = vc.bounds[(top + ch - 1) * 2] + vc.bounds[(top + ch - 1) * 2 + 1];
        Plane mid = {NULL, cw, last - first, (Py_ssize_t)cw * 3};
        tmp = static_cast<unsigned char *>(malloc((size_t)mid.height * mid.stride));
        acc = static_cast<int *>(malloc((size_t)cw * 3 * sizeof(int)));
        if (!tmp || !acc) goto end;
        mid.data = tmp;
        pass_horizontal(in, first, &mid, mid.height, cw, &blocks);
        pass_vertical(&mid, first, out, top, ch, 0, (Py_ssize_t)cw * 3, &vc, acc);
    } else {
        /* the kept output rows, over the input columns under the kept output columns, then those */
        int first = hc.bounds[left * 2];
        int last = hc.bounds[(left + cw - 1) * 2] + hc.bounds[(left + cw - 1) * 2 + 1];
        int span = last - first;
        Plane mid = {NULL, span, ch, (Py_ssize_t)span * 3};
        tmp = static_cast<unsigned char *>(malloc((size_t)mid.height * mid.stride));
        acc = static_cast<int *>(malloc((size_t)span * 3 * sizeof(int)));
        if (!tmp || !acc) goto end;
        mid.data = tmp;
        pass_vertical(in, 0, &mid, top, ch, (Py_ssize_t)first * 3, (Py_ssize_t)span * 3, &vc, acc);
        for (int blk = 0; blk < blocks.blocks; blk++) blocks.base[blk] -= first;
        pass_horizontal(&mid, 0, out, ch, cw, &blocks);
    }
    status = 0;
end:
    free(tmp);
    free(acc);
    coeffs_free(&hc);
    coeffs_free(&vc);
    blocks_free(&blocks);
    return status;
}

/* fit(src, src_h, src_w, dst, dst_h, dst_w, out_w, out_h, left, top, bicubic): src holds a packed
 * (src_h, src_w, 3) uint8 image, dst a writable (dst_h, dst_w, 3) one; every size is checked here. */
static PyObject *py_fit(PyObject *self, PyObject *args) {
    Py_buffer src, dst;
    int src_h, src_w, dst_h, dst_w, out_w, out_h, left, top, bicubic, status = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iiw*iiiiiip", &src, &src_h, &src_w, &dst, &dst_h, &dst_w, &out_w, &out_h,
                          &left, &top, &bicubic))
        return NULL;
    int sizes_ok = src_h >= 1 && src_w >= 1 && src_h <= INT_MAX / 4 && src_w <= INT_MAX / 4 && dst_h >= 1 &&
                   dst_w >= 1 && out_w >= 1 && out_h >= 1 && out_w <= INT_MAX / 64 && out_h <= INT_MAX / 64 &&
                   left >= 0 && top >= 0 && left <= out_w - dst_w && top <= out_h - dst_h &&
                   src.len == (Py_ssize_t)src_h * src_w * 3 && dst.len == (Py_ssize_t)dst_h * dst_w * 3;
    if (sizes_ok) {
        Plane in = {static_cast<unsigned char *>(src.buf), src_w, src_h, (Py_ssize_t)src_w * 3};
        Plane out = {static_cast<unsigned char *>(dst.buf), dst_w, dst_h, (Py_ssize_t)dst_w * 3};
        Py_BEGIN_ALLOW_THREADS
        status = fit(&in, out_w, out_h, left, top, &out, bicubic ? FILTER_BICUBIC : FILTER_BILINEAR);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (!sizes_ok) {
        PyErr_SetString(PyExc_ValueError, "fit: the buffers must hold the sizes given, the crop inside the resize");
        return NULL;
    }
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fit", py_fit, METH_VARARGS,
     "fit(src, src_h, src_w, dst, dst_h, dst_w, out_w, out_h, left, top, bicubic): dst = the crop at "
     "(top, left) of src resized to (out_h, out_w) by Pillow's resampling (bicubic, else bilinear), bit for bit."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fit", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fit(void) { return PyModule_Create(&module); }
