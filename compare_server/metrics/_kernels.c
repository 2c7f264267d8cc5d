/* Compiled kernels for the metrics in embeddings.py and logprobs.py: one pass over each row or
 * position instead of a dozen numpy passes over whole arrays. The numpy code beside them is the
 * reference; tests/test_kernels.py checks the two agree. If this file cannot be compiled where
 * cmp is installed, the numpy code runs instead.
 *
 * Arrays arrive through the buffer protocol (numpy arrays, strided views of record bytes), and
 * the GIL is released while the kernels run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define HAVE_PTHREADS 1
#endif
/* x86-64 compilers that take per-function targets: the hottest loop also has an AVX2 version,
 * used where the CPU has AVX2 and FMA and CMP_KERNELS is not "portable" (which tests use to check
 * the portable code on the same machine). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2 1
#else
#define HAVE_AVX2 0
#endif
static int use_avx2 = 0;

#define EPS 1e-12 /* logprobs.EPS: the floor for probabilities in logs */

static int is_int64(const Py_buffer *v) { /* numpy writes int64 as 'l' on LP64 platforms, 'q' elsewhere */
    const char *f = v->format[0] == '<' || v->format[0] == '=' ? v->format + 1 : v->format;
    return v->itemsize == 8 && (strcmp(f, "q") == 0 || strcmp(f, "l") == 0);
}

/* How a kernel's argument must look: its element type ('f' float32, 'd' float64, 'q' int64), its
 * dimensions, and its layout: VIEW (any strides: views of record bytes), FLAT (C-contiguous) or OUT
 * (C-contiguous and written). */
enum layout { VIEW, FLAT, OUT };
struct arg {
    const char *name;
    char type;
    int ndim;
    enum layout layout;
};

static void release_args(Py_buffer *v, int count) {
    for (int i = 0; i < count; i++)
        PyBuffer_Release(&v[i]);
}

/* The buffers of a kernel's count arguments, each checked against its spec; on failure none is
 * held and the error names the argument. */
static int get_args(PyObject *args, int count, const struct arg *spec, Py_buffer *v) {
    if (PyTuple_GET_SIZE(args) != count) {
        PyErr_Format(PyExc_TypeError, "expected %d arguments, got %zd", count, PyTuple_GET_SIZE(args));
        return -1;
    }
    for (int i = 0; i < count; i++) {
        int flags = spec[i].layout == VIEW ? PyBUF_RECORDS_RO
                    : PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (spec[i].layout == OUT ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(args, i), &v[i], flags) < 0) {
            release_args(v, i);
            return -1;
        }
        const char *type = spec[i].type == 'q' ? "int64" : spec[i].type == 'd' ? "float64" : "float32";
        int typed = spec[i].type == 'q' ? is_int64(&v[i]) : strcmp(v[i].format, spec[i].type == 'd' ? "d" : "f") == 0;
        if (v[i].ndim != spec[i].ndim || !typed) {
            PyErr_Format(PyExc_TypeError, "%s: expected a %d-D %s array, got %d-D '%s'", spec[i].name, spec[i].ndim,
                         type, v[i].ndim, v[i].format);
            release_args(v, i + 1);
            return -1;
        }
    }
    return 0;
}

/* get_args for the count arguments from args[first] on, where a kernel also takes other arguments. */
static int get_args_from(PyObject *args, Py_ssize_t first, int count, const struct arg *spec, Py_buffer *v) {
    PyObject *buffers = PyTuple_GetSlice(args, first, first + count);
    int got = buffers ? get_args(buffers, count, spec, v) : -1;
    Py_XDECREF(buffers);
    return got;
}

/* embed_rows(a, b, cos, mse, max_abs): per row of two [n, d] float32 arrays (rows contiguous), with
 * â = a/‖a‖: cos = â·b̂, mse = mean((â-b̂)²), max_abs = max|â-b̂|, into float64 [n] outputs.
 * Sums in double, as embeddings.normalise does; a NaN, an infinity or a zero row gives NaN. */
static PyObject *embed_rows(PyObject *self, PyObject *args) {
    static const struct arg spec[5] = {
        {"a", 'f', 2, VIEW}, {"b", 'f', 2, VIEW}, {"cos", 'd', 1, OUT}, {"mse", 'd', 1, OUT}, {"max_abs", 'd', 1, OUT}};
    Py_buffer v[5];
    if (get_args(args, 5, spec, v) < 0)
        return NULL;
    Py_ssize_t n = v[0].shape[0], d = v[0].shape[1];
    if (v[1].shape[0] != n || v[1].shape[1] != d || v[2].shape[0] != n || v[3].shape[0] != n || v[4].shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "embed_rows: shapes differ");
        goto fail;
    }
    const char *pa = v[0].buf, *pb = v[1].buf;
    Py_ssize_t ra = v[0].strides[0], ca = v[0].strides[1], rb = v[1].strides[0], cb = v[1].strides[1];
    double *cos = v[2].buf, *mse = v[3].buf, *mx = v[4].buf;
    if (ca != sizeof(float) || cb != sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "embed_rows: rows must be contiguous float32");
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const float *x = (const float *)(pa + i * ra), *y = (const float *)(pb + i * rb);
        double na = 0, nb = 0;
#pragma omp simd reduction(+ : na, nb)
        for (Py_ssize_t j = 0; j < d; j++) {
            na += (double)x[j] * x[j];
            nb += (double)y[j] * y[j];
        }
        double ia = 1.0 / sqrt(na), ib = 1.0 / sqrt(nb), dot = 0, dd = 0, m = 0;
        int nan = 0;
#pragma omp simd reduction(+ : dot, dd) reduction(max : m) reduction(| : nan)
        for (Py_ssize_t j = 0; j < d; j++) {
            double s = x[j] * ia, t = y[j] * ib, e = fabs(s - t);
            dot += s * t;
            dd += e * e;
            m = e > m ? e : m;
            nan |= e != e;
        }
        cos[i] = dot;
        mse[i] = dd / (double)d;
        mx[i] = nan ? NAN : m;
    }
    Py_END_ALLOW_THREADS
    release_args(v, 5);
    Py_RETURN_NONE;
fail:
    release_args(v, 5);
    return NULL;
}

/* sample_rows(a, b, an, bn, fine) -> (max_error, prompts): rows of two [n, d] float32 arrays
 * (rows contiguous) normalised as embeddings.normalise does (sums and division in double) into
 * float32 [n, d] an and bn; each finite element error |â - b̂| (in double) counted into int64
 * fine[bins], bin min(error * bins / 2, bins - 1) (errors are at most 2). Returns the largest
 * finite error (0 for none) and how many rows had one. */
static PyObject *sample_rows(PyObject *self, PyObject *args) {
    static const struct arg spec[5] = {
        {"a", 'f', 2, VIEW}, {"b", 'f', 2, VIEW}, {"an", 'f', 2, OUT}, {"bn", 'f', 2, OUT}, {"fine", 'q', 1, OUT}};
    Py_buffer v[5];
    if (get_args(args, 5, spec, v) < 0)
        return NULL;
    Py_ssize_t n = v[0].shape[0], d = v[0].shape[1], bins = v[4].shape[0];
    for (int i = 0; i < 4; i++)
        if (v[i].shape[0] != n || v[i].shape[1] != d || v[i].strides[1] != sizeof(float)) {
            PyErr_SetString(PyExc_ValueError, "sample_rows: shapes differ or rows are not contiguous float32");
            goto fail;
        }
    if (bins < 1) {
        PyErr_SetString(PyExc_ValueError, "sample_rows: fine needs at least one bin");
        goto fail;
    }
    double largest = 0;
    Py_ssize_t prompts = 0;
    long long *fine = v[4].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const float *x = (const float *)((const char *)v[0].buf + i * v[0].strides[0]);
        const float *y = (const float *)((const char *)v[1].buf + i * v[1].strides[0]);
        float *xn = (float *)v[2].buf + i * d, *yn = (float *)v[3].buf + i * d;
        double na = 0, nb = 0;
#pragma omp simd reduction(+ : na, nb)
        for (Py_ssize_t j = 0; j < d; j++) {
            na += (double)x[j] * x[j];
            nb += (double)y[j] * y[j];
        }
        na = sqrt(na);
        nb = sqrt(nb);
        int finite = 0;
        for (Py_ssize_t j = 0; j < d; j++) {
            double s = x[j] / na, t = y[j] / nb, e = fabs(s - t);
            xn[j] = (float)s;
            yn[j] = (float)t;
            if (isfinite(e)) {
                Py_ssize_t bin = (Py_ssize_t)(e * (bins / 2.0));
                fine[bin < bins ? bin : bins - 1]++;
                largest = e > largest ? e : largest;
                finite = 1;
            }
        }
        prompts += finite;
    }
    Py_END_ALLOW_THREADS
    release_args(v, 5);
    return Py_BuildValue("dn", largest, prompts);
fail:
    release_args(v, 5);
    return NULL;
}

/* Ascending ranks (1-based, ties averaged) of x[0..m-1], written to r; order is scratch. */
static void ranks(const double *x, int m, double *r, int *order) {
    for (int i = 0; i < m; i++) { /* insertion sort, descending */
        int k = i;
        while (k > 0 && x[order[k - 1]] < x[i]) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    for (int s = 0; s < m;) {
        int e = s;
        while (e + 1 < m && x[order[e + 1]] == x[order[s]])
            e++;
        double rank = m - (s + e) / 2.0; /* descending positions s..e are ascending ranks m-e..m-s */
        for (int k = s; k <= e; k++)
            r[order[k]] = rank;
        s = e + 1;
    }
}

/* ranks() of a sequence already in descending order: no sort. */
static inline void sorted_ranks(const double *x, int m, double *r) {
    for (int s = 0; s < m;) {
        int e = s;
        while (e + 1 < m && x[e + 1] == x[s])
            e++;
        double rank = m - (s + e) / 2.0;
        for (int k = s; k <= e; k++)
            r[k] = rank;
        s = e + 1;
    }
}

/* sorted_ranks() of top[0..k-1] (descending) followed by m-k copies of fill (no larger than
 * top[k-1]); values is scratch. Without ties, rank c is m-c and the fills share the lowest. */
static inline __attribute__((always_inline)) void descending_ranks(const double *top, int k, double fill, int m,
                                                                   double *r, double *values) {
    int tied = m > k && top[k - 1] == fill;
#pragma omp simd reduction(| : tied)
    for (int i = 1; i < k; i++)
        tied |= top[i] == top[i - 1];
    if (tied) {
        for (int c = 0; c < m; c++)
            values[c] = c < k ? top[c] : fill;
        sorted_ranks(values, m, r);
        return;
    }
    double fills = (m - k + 1) / 2.0;
#pragma omp simd
    for (int c = 0; c < m; c++)
        r[c] = c < k ? m - c : fills;
}

/* Pearson r of two rank vectors: ties averaged keep their sum m(m+1)/2, so both means are (m+1)/2. */
static inline double rank_pearson(const double *x, const double *y, int m) {
    double mean = (m + 1) / 2.0, sxy = 0, sxx = 0, syy = 0;
#pragma omp simd reduction(+ : sxy, sxx, syy)
    for (int i = 0; i < m; i++) {
        double dx = x[i] - mean, dy = y[i] - mean;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    double denom = sqrt(sxx * syy);
    return denom > 0 ? sxy / denom : NAN;
}

/* exp and log written so that loops over a position's columns vectorise: libm's are one call per
 * value. Against glibc's, over 20 million logprobs and probabilities, exp is within 2 ulp and log
 * within 5 (1e-15 relative; the metrics are checked against numpy's to 1e-9 in
 * tests/test_kernels.py). Integers move through the bits of doubles: x86-64 before AVX-512 has no
 * vector conversion between doubles and 64-bit integers. */
static inline uint64_t bits_of(double x) {
    union { double d; uint64_t u; } v; /* a union, not memcpy, which stops the vectoriser */
    v.d = x;
    return v.u;
}

static inline double double_of(uint64_t u) {
    union { uint64_t u; double d; } v;
    v.u = u;
    return v.d;
}

#define ROUNDER 0x1.8p52             /* x + ROUNDER - ROUNDER rounds x to an integer, held in its low bits */
#define LN2_HI 6.93147180369123816490e-01 /* ln 2 split so that n * LN2_HI is exact for |n| < 2^11 */
#define LN2_LO 1.90821492927058770002e-10
#define LOG_EPS -27.631021115928547 /* log(EPS) */

/* 2^n for an integer-valued n in -1022..1023, held as a double */
static inline double pow2(double n) { return double_of((bits_of(n + ROUNDER) - bits_of(ROUNDER) + 1023) << 52); }

/* e^x: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^13 (truncation below 1e-17).
 * 2^n is applied as two halves so results that are subnormal or overflow round once, as libm's do.
 * -inf (and anything below -746) gives 0. A NaN gives 0 too: a NaN logprob makes every
 * distribution metric of its position NaN, so its probability is never read. */
static inline double exp_fast(double x) {
    x = x > -746.0 ? x : -746.0;
    x = x < 710.0 ? x : 710.0;
    double n = (x * 1.4426950408889634 + ROUNDER) - ROUNDER;
    double r = (x - n * LN2_HI) - n * LN2_LO, r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    /* Estrin's scheme: four multiply-adds deep where Horner's is thirteen; independent values
     * overlap in the pipeline instead of waiting on each other. */
    double q0 = 1.0 + r, q1 = 1.0 / 2 + r * (1.0 / 6), q2 = 1.0 / 24 + r * (1.0 / 120),
           q3 = 1.0 / 720 + r * (1.0 / 5040), q4 = 1.0 / 40320 + r * (1.0 / 362880),
           q5 = 1.0 / 3628800 + r * (1.0 / 39916800), q6 = 1.0 / 479001600 + r * (1.0 / 6227020800.0);
    double p = (q0 + q1 * r2) + (q2 + q3 * r2) * r4 + ((q4 + q5 * r2) + q6 * r4) * r8;
    double half = (n * 0.5 + ROUNDER) - ROUNDER;
    return p * pow2(half) * pow2(n - half);
}

/* ln x for a normal, finite x > 0 (the kernel takes logs of max(p, EPS)): x = 2^e m with m in
 * [sqrt(1/2), sqrt(2)), ln m = 2 atanh(f) with f = (m-1)/(m+1), |f| <= 0.172, to f^21. */
static inline double log_fast(double x) {
    uint64_t u = bits_of(x);
    uint64_t e = ((u + (1024ULL << 52) - 0x3fe6a09e667f3bcdULL) >> 52) - 1024; /* two's complement */
    double m = double_of(u - (e << 52));
    double f = (m - 1.0) / (m + 1.0), s = f * f, s2 = s * s, s4 = s2 * s2, s8 = s4 * s4;
    double p = ((1.0 + s * (1.0 / 3)) + (1.0 / 5 + s * (1.0 / 7)) * s2) +
               ((1.0 / 9 + s * (1.0 / 11)) + (1.0 / 13 + s * (1.0 / 15)) * s2) * s4 +
               ((1.0 / 17 + s * (1.0 / 19)) + (1.0 / 21) * s2) * s8;
    double de = double_of(bits_of(ROUNDER) + e) - ROUNDER;
    return de * LN2_HI + (de * LN2_LO + 2.0 * f * p);
}

/* The mass a distribution leaves to the rest of the vocabulary: 1 - sum, never below 0. */
static inline double left_over(double sum) { return 1.0 - sum > 0 ? 1.0 - sum : 0.0; }

static inline double fill(double top_sum, double last, int missing) {
    double leftover = left_over(top_sum);
    double share = leftover / (missing > 1 ? missing : 1);
    return last < share ? last : share;
}

#if HAVE_AVX2
/* exp_fast on four doubles, the same steps written in AVX2 and FMA intrinsics. GCC's own
 * vectorisation of exp_fast keeps eight values in flight and spills its temporaries to the stack:
 * this runs at 1.0 ns a value against its 1.8, and takes the logprob kernel from 322 to 295 ns a
 * position. */
#define SPLAT _mm256_set1_pd
/* pow2() on four integer-valued doubles */
__attribute__((target("avx2,fma"))) static inline __m256d pow2x4(__m256d n) {
    const __m256i bias = _mm256_set1_epi64x(1023 - (long long)bits_of(ROUNDER));
    __m256i biased = _mm256_add_epi64(_mm256_castpd_si256(_mm256_add_pd(n, SPLAT(ROUNDER))), bias);
    return _mm256_castsi256_pd(_mm256_slli_epi64(biased, 52));
}

__attribute__((target("avx2,fma"))) static inline __m256d exp4(__m256d x) {
    const __m256d rounder = SPLAT(ROUNDER);
    x = _mm256_min_pd(_mm256_max_pd(x, SPLAT(-746.0)), SPLAT(710.0)); /* max(NaN, c) is c: NaN gives 0 */
    __m256d n = _mm256_sub_pd(_mm256_fmadd_pd(x, SPLAT(1.4426950408889634), rounder), rounder);
    __m256d r = _mm256_fnmadd_pd(n, SPLAT(LN2_LO), _mm256_fnmadd_pd(n, SPLAT(LN2_HI), x));
    __m256d r2 = _mm256_mul_pd(r, r), r4 = _mm256_mul_pd(r2, r2), r8 = _mm256_mul_pd(r4, r4);
    __m256d q0 = _mm256_add_pd(SPLAT(1.0), r), q1 = _mm256_fmadd_pd(r, SPLAT(1.0 / 6), SPLAT(1.0 / 2)),
            q2 = _mm256_fmadd_pd(r, SPLAT(1.0 / 120), SPLAT(1.0 / 24)),
            q3 = _mm256_fmadd_pd(r, SPLAT(1.0 / 5040), SPLAT(1.0 / 720)),
            q4 = _mm256_fmadd_pd(r, SPLAT(1.0 / 362880), SPLAT(1.0 / 40320)),
            q5 = _mm256_fmadd_pd(r, SPLAT(1.0 / 39916800), SPLAT(1.0 / 3628800)),
            q6 = _mm256_fmadd_pd(r, SPLAT(1.0 / 6227020800.0), SPLAT(1.0 / 479001600));
    __m256d p = _mm256_fmadd_pd(_mm256_fmadd_pd(q3, r2, q2), r4, _mm256_fmadd_pd(q1, r2, q0));
    p = _mm256_fmadd_pd(_mm256_fmadd_pd(q6, r4, _mm256_fmadd_pd(q5, r2, q4)), r8, p);
    __m256d half = _mm256_sub_pd(_mm256_fmadd_pd(n, SPLAT(0.5), rounder), rounder), rest = _mm256_sub_pd(n, half);
    return _mm256_mul_pd(_mm256_mul_pd(p, pow2x4(half)), pow2x4(rest));
}

/* log_fast() on four doubles, each normal, finite and > 0 */
__attribute__((target("avx2,fma"))) static inline __m256d log4(__m256d x) {
    __m256i u = _mm256_castpd_si256(x);
    __m256i e = _mm256_sub_epi64(
        _mm256_srli_epi64(_mm256_add_epi64(u, _mm256_set1_epi64x((1024LL << 52) - 0x3fe6a09e667f3bcdLL)), 52),
        _mm256_set1_epi64x(1024));
    __m256d m = _mm256_castsi256_pd(_mm256_sub_epi64(u, _mm256_slli_epi64(e, 52)));
    __m256d f = _mm256_div_pd(_mm256_sub_pd(m, SPLAT(1.0)), _mm256_add_pd(m, SPLAT(1.0)));
    __m256d s = _mm256_mul_pd(f, f), s2 = _mm256_mul_pd(s, s), s4 = _mm256_mul_pd(s2, s2), s8 = _mm256_mul_pd(s4, s4);
    __m256d q0 = _mm256_fmadd_pd(s, SPLAT(1.0 / 3), SPLAT(1.0)), q1 = _mm256_fmadd_pd(s, SPLAT(1.0 / 7), SPLAT(1.0 / 5)),
            q2 = _mm256_fmadd_pd(s, SPLAT(1.0 / 11), SPLAT(1.0 / 9)),
            q3 = _mm256_fmadd_pd(s, SPLAT(1.0 / 15), SPLAT(1.0 / 13)),
            q4 = _mm256_fmadd_pd(s, SPLAT(1.0 / 19), SPLAT(1.0 / 17));
    __m256d p = _mm256_fmadd_pd(_mm256_fmadd_pd(q3, s2, q2), s4, _mm256_fmadd_pd(q1, s2, q0));
    p = _mm256_fmadd_pd(_mm256_fmadd_pd(SPLAT(1.0 / 21), s2, q4), s8, p);
    __m256d de = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(SPLAT(ROUNDER)), e)),
                               SPLAT(ROUNDER));
    return _mm256_fmadd_pd(de, SPLAT(LN2_HI), _mm256_fmadd_pd(de, SPLAT(LN2_LO), _mm256_mul_pd(_mm256_add_pd(f, f), p)));
}

__attribute__((target("avx2,fma"))) static inline double sum4(__m256d v) {
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

/* Whether Sa and Sb list the same ids in the same order, none twice (k a multiple of 4, at most
 * 32): where two devices agree, each id then matches its own column and no search is needed. No id
 * is listed twice if no two of Sa's low 32 bits are equal, which comparing them with their
 * rotations by 1..k/2 shows (every two columns are some rotation apart); low is scratch for
 * k + k/2 + 8 of them. */
__attribute__((target("avx2,fma"), noinline)) static int same_ids_avx2(const long long *ida, const long long *idb,
                                                                        int k, uint32_t *low) {
    __m256i differ = _mm256_setzero_si256();
    for (int i = 0; i < k; i += 4)
        differ = _mm256_or_si256(differ, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(ida + i)),
                                                          _mm256_loadu_si256((const __m256i *)(idb + i))));
    if (!_mm256_testz_si256(differ, differ))
        return 0;
    int half = k / 2;
    for (int j = 0; j < k + half + 8; j++)
        low[j] = (uint32_t)ida[j % k];
    __m256i twice = _mm256_setzero_si256(), lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < k; v += 8) {
        __m256i here = _mm256_loadu_si256((const __m256i *)(low + v)), equal = _mm256_setzero_si256();
        for (int s = 1; s <= half; s++)
            equal = _mm256_or_si256(equal, _mm256_cmpeq_epi32(here, _mm256_loadu_si256((const __m256i *)(low + v + s))));
        __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(k - v), lane); /* columns v.. below k */
        twice = _mm256_or_si256(twice, _mm256_and_si256(equal, valid));
    }
    return _mm256_testz_si256(twice, twice);
}

/* position()'s values 1..7 where both rows are in order, hold no bad value and no tie, and Sa and
 * Sb hold the same ids (the union is Sa's columns, no fills; k a multiple of 4): one pass over
 * Sa's columns, each reading its match in Sb (itself where the ids are identical), with no union
 * built first. */
__attribute__((target("avx2,fma"), noinline)) static void same_set_avx2(const float *la, int k, const double *ta,
                                                                         const double *tb, const double *lbk,
                                                                         const int *match, int identical,
                                                                         double top_a, double top_b, double *out) {
    __m256d zero = _mm256_setzero_pd(), eps = SPLAT(EPS);
    __m256d dot = zero, aa = zero, bb = zero, ae = zero, rel = zero, kl = zero, js = zero;
    int counted = 0, d2 = 0;
    for (int i = 0; i < k; i++)
        d2 += (match[i] - i) * (match[i] - i);
    for (int i = 0; i < k; i += 4) {
        __m256d p = _mm256_loadu_pd(ta + i), q, lq;
        if (identical) {
            q = _mm256_loadu_pd(tb + i);
            lq = _mm256_loadu_pd(lbk + i);
        } else {
            __m128i j = _mm_loadu_si128((const __m128i *)(match + i));
            q = _mm256_i32gather_pd(tb, j, 8);
            lq = _mm256_i32gather_pd(lbk, j, 8);
        }
        __m256d lp = _mm256_blendv_pd(SPLAT(LOG_EPS), _mm256_cvtps_pd(_mm_loadu_ps(la + i)), _mm256_cmp_pd(p, eps, _CMP_GT_OQ));
        __m256d l = log4(_mm256_max_pd(_mm256_mul_pd(SPLAT(0.5), _mm256_add_pd(p, q)), eps));
        __m256d d = _mm256_andnot_pd(SPLAT(-0.0), _mm256_sub_pd(p, q)), given = _mm256_cmp_pd(p, zero, _CMP_GT_OQ);
        counted += __builtin_popcount(_mm256_movemask_pd(given)); /* relative error: where A gave mass */
        dot = _mm256_fmadd_pd(p, q, dot);
        aa = _mm256_fmadd_pd(p, p, aa);
        bb = _mm256_fmadd_pd(q, q, bb);
        ae = _mm256_add_pd(ae, d);
        rel = _mm256_add_pd(rel, _mm256_and_pd(given, _mm256_div_pd(d, _mm256_blendv_pd(SPLAT(1.0), p, given))));
        kl = _mm256_fmadd_pd(p, _mm256_sub_pd(lp, lq), kl);
        js = _mm256_add_pd(js, _mm256_fmadd_pd(p, _mm256_sub_pd(lp, l), _mm256_mul_pd(q, _mm256_sub_pd(lq, l))));
    }
    /* The tail: what each run's top-k leaves, and its three logs as one vector. */
    double tail_a = left_over(top_a), tail_b = left_over(top_b);
    double logs[4];
    _mm256_storeu_pd(logs, log4(_mm256_max_pd(_mm256_setr_pd(tail_a, tail_b, 0.5 * (tail_a + tail_b), 1.0), eps)));
    out[1] = 1.0;
    out[2] = (sum4(dot) + tail_a * tail_b) / sqrt((sum4(aa) + tail_a * tail_a) * (sum4(bb) + tail_b * tail_b));
    out[3] = sum4(kl) + tail_a * (logs[0] - logs[1]);
    out[4] = 0.5 * (sum4(js) + tail_a * (logs[0] - logs[2]) + tail_b * (logs[1] - logs[2]));
    out[5] = (sum4(ae) + fabs(tail_a - tail_b)) / (k + 1);
    out[6] = k > 1 ? 1.0 - 6.0 * d2 / ((double)k * ((double)k * k - 1)) : NAN;
    out[7] = counted ? sum4(rel) / counted : NAN;
}

/* probabilities() for the first count rounded down to a multiple of 4 values; returns how many. */
__attribute__((target("avx2,fma"), noinline)) static Py_ssize_t probabilities_avx2(const float *la, const float *lb,
                                                                                   Py_ssize_t count, double *ta,
                                                                                   double *tb, double *lbk) {
    Py_ssize_t whole = count & ~(Py_ssize_t)3;
    for (Py_ssize_t i = 0; i < whole; i += 4) {
        __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(la + i)), b = _mm256_cvtps_pd(_mm_loadu_ps(lb + i));
        __m256d pb = exp4(b), kept = _mm256_cmp_pd(pb, SPLAT(EPS), _CMP_GT_OQ);
        _mm256_storeu_pd(ta + i, exp4(a));
        _mm256_storeu_pd(tb + i, pb);
        _mm256_storeu_pd(lbk + i, _mm256_blendv_pd(SPLAT(LOG_EPS), b, kept));
    }
    return whole;
}
#undef SPLAT
#endif

/* match_ids for k <= 32: Sa's ids are compared with all of Sb's at once on their low 32 bits (eight
 * to a vector instruction, against four for 64-bit ids) into a bit mask; the rare candidate whose
 * high bits differ is dropped after. */
static inline __attribute__((always_inline)) int match_narrow(const long long *ida, const long long *idb, int k,
                                                              int *match, int *b_in_a, int *missing,
                                                              uint32_t *low) {
    int distinct = 1, unmatched = 0, padded = (k + 7) & ~7; /* whole vectors: no scalar remainder */
    uint32_t taken = 0, within = k < 32 ? (1u << k) - 1 : ~0u;
#pragma omp simd
    for (int j = 0; j < padded; j++)
        low[j] = j < k ? (uint32_t)idb[j] : 0;
    for (int i = 0; i < k; i++) {
        uint32_t hits = 0, id = (uint32_t)ida[i];
#pragma omp simd reduction(| : hits)
        for (int j = 0; j < padded; j++)
            hits |= (uint32_t)(low[j] == id) << j;
        hits &= within;
        if (hits & (hits - 1)) { /* several candidates: an id listed twice, or equal low bits */
            for (uint32_t h = hits; h; h &= h - 1)
                if (idb[__builtin_ctz(h)] != ida[i])
                    hits &= ~(1u << __builtin_ctz(h));
        } else { /* at most one: checked without a branch */
            int j = hits ? __builtin_ctz(hits) : 0;
            hits = idb[j] == ida[i] ? hits : 0;
        }
        distinct &= (hits & (hits - 1)) == 0 && (hits & taken) == 0;
        taken |= hits;
        match[i] = hits ? __builtin_ctz(hits) : -1;
        unmatched += !hits;
    }
    for (int j = 0; j < k; j++)
        b_in_a[j] = (taken >> j) & 1;
    missing[0] = k - __builtin_popcount(taken);
    missing[1] = unmatched;
    return distinct;
}

/* Where each of Sa's ids sits in Sb. match[i]: the first j with idb[j] == ida[i], or -1;
 * b_in_a[j]: whether idb[j] is in Sa; missing[0]: how many of Sb's ids Sa lacks, missing[1]: how
 * many of Sa's Sb lacks. Returns whether no id is matched twice (Sa or Sb listing an
 * id twice is bad input; the ranks then take the sorting path). Up to 32 ids (APIs cap top-k at
 * 20), match_narrow; wider lists are scanned id by id. */
static inline __attribute__((always_inline)) int match_ids(const long long *ida, const long long *idb, int k,
                                                           int *match, int *b_in_a, int *missing, uint32_t *low) {
    if (k <= 32)
        return match_narrow(ida, idb, k, match, b_in_a, missing, low);
    int distinct = 1;
    for (int j = 0; j < k; j++)
        b_in_a[j] = 0;
    for (int i = 0; i < k; i++) {
        match[i] = -1;
        for (int j = 0; j < k; j++)
            if (ida[i] == idb[j]) {
                match[i] = j;
                break;
            }
        if (match[i] >= 0) {
            distinct &= !b_in_a[match[i]];
            b_in_a[match[i]] = 1;
        }
    }
    for (int j = 0; j < k; j++)
        if (!b_in_a[j]) /* unmatched, unless Sb lists an id of Sa twice */
            for (int i = 0; i < k; i++)
                if (idb[j] == ida[i]) {
                    b_in_a[j] = 1;
                    distinct = 0;
                    break;
                }
    missing[0] = missing[1] = 0;
    for (int j = 0; j < k; j++) {
        missing[0] += !b_in_a[j];
        missing[1] += match[j] < 0;
    }
    return distinct;
}

/* Probabilities are computed for a group of rows at once, up to GROUP_VALUES values a side: one
 * long loop over a record's contiguous rows vectorises fully, where a loop per row of K = 20 leaves
 * a remainder in scalar code. */
#define GROUP_VALUES 2048

/* Scratch for positions(), for top-k width k: SCRATCH_DOUBLES(k) doubles, SCRATCH_INTS(k) ints. */
#define GROUP_ROWS(k) ((k) >= GROUP_VALUES ? 1 : GROUP_VALUES / (k))
#define SCRATCH_DOUBLES(k) (3 * (size_t)GROUP_ROWS(k) * (k) + 18 * (size_t)(k) + 40)
#define SCRATCH_INTS(k) (5 * (size_t)(k) + 8) /* order: k + k/2 + 8 low words for same_ids_avx2 */
#define KERNEL_THREADS_MAX 64 /* threads one position_rows call may use */


/* ta, tb: both rows' probabilities; lbk: Sb's logprobs as the union takes them (log(EPS) below EPS). */
static inline __attribute__((always_inline)) void probabilities(const float *la, const float *lb, Py_ssize_t count,
                                                                double *ta, double *tb, double *lbk) {
    Py_ssize_t done = 0; /* by the AVX2 version, which leaves the last 0-3 values to the loop below */
#if HAVE_AVX2
    if (use_avx2)
        done = probabilities_avx2(la, lb, count, ta, tb, lbk);
#endif
#pragma omp simd
    for (Py_ssize_t i = done; i < count; i++) {
        ta[i] = exp_fast(la[i]);
        tb[i] = exp_fast(lb[i]);
        lbk[i] = tb[i] > EPS ? lb[i] : LOG_EPS;
    }
}

/* One position: logprobs.position_metrics for a single row, given its probabilities (ta, tb, lbk
 * from probabilities()). out[8] follows POSITION_METRICS: top1_match, topk_overlap, prob_cos, kl,
 * js, mae, spearman, rel_err. Each step is a loop over the union's columns that vectorises.
 * Returns whether either row is out of order (not most likely first, or holding a NaN): its
 * values are then not the metric's, and the caller sorts the rows and asks again. */
static inline __attribute__((always_inline)) int position(const long long *ida, const float *la, const long long *idb,
                                                           const float *lb, int k, const double *ta, const double *tb,
                                                           const double *lbk, double *out, double *scratch,
                                                           int *iscratch) {
    /* Columns: the union's m, the tail, and zeros up to a whole number of vectors. */
    double *pa = scratch, *pb = pa + 2 * k + 8, *lpa = pb + 2 * k + 8, *lpb = lpa + 2 * k + 8, *lm = lpb + 2 * k + 8;
    double *rka = lm + 2 * k + 8, *rkb = rka + 2 * k, *seq = rkb + 2 * k, *seq_rank = seq + 2 * k;
    int *match = iscratch, *b_in_a = match + k, *order = b_in_a + k;
    /* Row checks and sums in one loop: a NaN or +inf is no probability (bad); a row that is not most
     * likely first (or holds a NaN) is rising; equal neighbours are ties, which the ranks average. */
    int bad = !(la[0] < INFINITY) | !(lb[0] < INFINITY), rising = 0, tied = 0;
    double top_a = ta[0], top_b = tb[0];
#pragma omp simd reduction(| : bad, rising, tied) reduction(+ : top_a, top_b)
    for (int i = 1; i < k; i++) {
        bad |= !(la[i] < INFINITY) | !(lb[i] < INFINITY);
        rising |= !(la[i] <= la[i - 1]) | !(lb[i] <= lb[i - 1]);
        tied |= (ta[i] == ta[i - 1]) | (tb[i] == tb[i - 1]);
        top_a += ta[i];
        top_b += tb[i];
    }
    int missing[2] = {0, 0}, distinct = 1, identical = 0;
#if HAVE_AVX2
    identical = use_avx2 && k % 4 == 0 && k <= 32 && same_ids_avx2(ida, idb, k, (uint32_t *)order);
#endif
    if (identical)
        for (int i = 0; i < k; i++) {
            match[i] = i;
            b_in_a[i] = 1;
        }
    else
        distinct = match_ids(ida, idb, k, match, b_in_a, missing, (uint32_t *)order);
    int missing_a = missing[0], missing_b = missing[1];
#if HAVE_AVX2
    if (use_avx2 && k % 4 == 0 && !bad && !rising && !tied && distinct && !missing_a) {
        out[0] = ida[0] == idb[0];
        same_set_avx2(la, k, ta, tb, lbk, match, identical, top_a, top_b, out);
        return 0;
    }
#endif
    /* An id one run's top-k lacks gets min(its K-th probability, its left-over mass / missing). */
    double fills[2] = {fill(top_a, ta[k - 1], missing_a), fill(top_b, tb[k - 1], missing_b)}, log_fills[2] = {0, 0};
    if (missing_a || missing_b) {
#pragma omp simd
        for (int s = 0; s < 2; s++)
            log_fills[s] = log_fast(fills[s] > EPS ? fills[s] : EPS);
    }
    double fa = fills[0], fb = fills[1], log_fa = log_fills[0], log_fb = log_fills[1], d2 = 0;
    /* The union: Sa's ids in Sa's order, then Sb's ids that Sa lacks; column m is the tail. d2 is
     * Spearman's sum of squared rank differences when Sa and Sb hold the same ids. */
#pragma omp simd reduction(+ : d2)
    for (int i = 0; i < k; i++) {
        int j = match[i] < 0 ? 0 : match[i];
        double p = tb[j], lp = lbk[j]; /* read whether matched or not: no masked gather */
        pa[i] = ta[i];
        lpa[i] = ta[i] > EPS ? la[i] : LOG_EPS;
        pb[i] = match[i] < 0 ? fb : p;
        lpb[i] = match[i] < 0 ? log_fb : lp;
        d2 += (double)(j - i) * (j - i);
    }
    int m = k;
    for (int j = 0; missing_a && j < k; j++)
        if (!b_in_a[j]) {
            pa[m] = fa;
            lpa[m] = log_fa;
            pb[m] = tb[j];
            lpb[m] = lbk[j];
            m++;
        }
    double sum_a = 0, sum_b = 0;
#pragma omp simd reduction(+ : sum_a, sum_b)
    for (int c = 0; c < m; c++) {
        sum_a += pa[c];
        sum_b += pb[c];
    }
    double tail_a = left_over(sum_a), tail_b = left_over(sum_b);
    /* Columns 0..m: the union and the tail, padded with zeros (which add nothing to any sum) to
     * whole vectors; the logs' loop runs two columns further, to take the tails' own logs too. */
    int width = (m + 4) & ~3, log_width = (m + 6) & ~3;
    for (int c = m; c < log_width; c++) {
        pa[c] = c == m ? tail_a : 0.0;
        pb[c] = c == m ? tail_b : 0.0;
    }
#pragma omp simd
    for (int c = 0; c < log_width; c++) {
        double x = c <= m ? 0.5 * (pa[c] + pb[c]) : c == m + 1 ? tail_a : tail_b;
        lm[c] = log_fast(x > EPS ? x : EPS);
    }
    for (int c = m; c < width; c++) {
        lpa[c] = c == m ? lm[m + 1] : 0.0;
        lpb[c] = c == m ? lm[m + 2] : 0.0;
    }
    double dot = 0, aa = 0, bb = 0, kl = 0, js = 0, ae = 0, rel = 0;
    int rel_n = 0;
#pragma omp simd reduction(+ : dot, aa, bb, kl, js, ae, rel, rel_n)
    for (int c = 0; c < width; c++) {
        double p = pa[c], q = pb[c], lp = lpa[c], lq = lpb[c], l = lm[c];
        int counted = (c < m) & (p > 0); /* relative error: over the union, where A gave mass */
        dot += p * q;
        aa += p * p;
        bb += q * q;
        ae += fabs(p - q);
        rel += counted ? fabs(p - q) / (p > 0 ? p : 1.0) : 0.0;
        rel_n += counted;
        /* Every log here is finite (floored at log(EPS); padding is 0), so a probability of 0
         * adds exactly 0: no masks needed (they cost 5%). */
        kl += p * (lp - lq);
        js += p * (lp - l) + q * (lq - l);
    }
    double spearman;
    if (!rising && distinct && !tied && m == k) {
        /* The same ids, no two equally likely: column i ranks k - i in A and k - match[i] in B, and
         * Pearson's r of distinct ranks is 1 - 6 sum(d^2) / (k (k^2 - 1)). */
        spearman = k > 1 ? 1.0 - 6.0 * d2 / ((double)k * ((double)k * k - 1)) : NAN;
    } else if (!rising && distinct) {
        /* No sort needed. pa is descending as built: Sa's probabilities, then fills no larger than
         * the K-th. pb holds Sb's probabilities plus as many fills, so its values in descending
         * order are tb[0..k-1] then fb: rank that sequence and map each column to its entry. */
        descending_ranks(ta, k, fa, m, rka, seq);
        descending_ranks(tb, k, fb, m, seq_rank, seq);
        for (int i = 0; i < k; i++)
            rkb[i] = seq_rank[match[i] < 0 ? k : match[i]]; /* entry k is the first fill */
        for (int j = 0, c = k; c < m; j++)
            if (!b_in_a[j])
                rkb[c++] = seq_rank[j];
        spearman = rank_pearson(rka, rkb, m);
    } else { /* rows out of order (bad values) or an id listed twice */
        ranks(pa, m, rka, order);
        ranks(pb, m, rkb, order);
        spearman = rank_pearson(rka, rkb, m);
    }
    out[0] = ida[0] == idb[0];
    out[1] = (double)(k - missing_a) / k;
    out[2] = dot / sqrt(aa * bb);
    out[3] = kl;
    out[4] = 0.5 * js;
    out[5] = ae / (m + 1);
    out[6] = spearman;
    out[7] = rel_n ? rel / rel_n : NAN;
    if (bad)
        for (int i = 2; i < 8; i++)
            out[i] = NAN;
    return rising;
}

/* means[c] = the mean of the finite values of column c of rows [count, 8], NaN if none. */
static inline void block_means(const double *rows, Py_ssize_t count, double *means) {
    for (int c = 0; c < 8; c++) {
        double sum = 0;
        Py_ssize_t finite = 0;
        for (Py_ssize_t r = 0; r < count; r++) {
            double x = rows[r * 8 + c];
            int keep = isfinite(x);
            sum += keep ? x : 0.0;
            finite += keep;
        }
        means[c] = finite ? sum / finite : NAN;
    }
}

/* The loop over a call's positions, compiled twice on x86-64 with GCC: for AVX2 and FMA, which
 * most servers since 2013 have, and for the baseline; the loader picks the one the CPU runs. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__GLIBC__)
#define CLONED __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONED
#endif

/* How many of count floats are NaN or infinite. */
static inline Py_ssize_t nonfinite_floats(const float *x, Py_ssize_t count) {
    Py_ssize_t bad = 0;
#pragma omp simd reduction(+ : bad)
    for (Py_ssize_t j = 0; j < count; j++)
        bad += !(x[j] < INFINITY && x[j] > -INFINITY);
    return bad;
}

/* Where the blocks of an [n, T, K] tensor lie: block i at at[i] when at is set (each record's own
 * bytes, as the store hands them over: a diff joins nothing), else at buf + i * stride; its T rows
 * row_stride bytes apart, each K contiguous values. */
struct blocks {
    const char *buf;
    const char *const *at;
    Py_ssize_t stride, row_stride;
};

static inline const char *block_start(const struct blocks *x, Py_ssize_t i) {
    return x->at ? x->at[i] : x->buf + i * x->stride;
}

/* How many of block i's logprobs in x, all its t rows whether compared or not, are NaN or
 * infinite (what a diff reports of each run). */
static inline Py_ssize_t block_nonfinite(const struct blocks *x, Py_ssize_t i, Py_ssize_t t, int k) {
    const char *start = block_start(x, i);
    if (x->row_stride == k * (Py_ssize_t)sizeof(float))
        return nonfinite_floats((const float *)start, t * k);
    Py_ssize_t bad = 0;
    for (Py_ssize_t r = 0; r < t; r++)
        bad += nonfinite_floats((const float *)(start + r * x->row_stride), k);
    return bad;
}

/* Blocks [first, last): their positions into out (from block first's first row), each block's
 * means into means[i], and how many of each run's logprobs are NaN or infinite into nonfinite[2];
 * returns how many rows were out of order. */
static inline __attribute__((always_inline)) Py_ssize_t positions_of_width(const struct blocks *v, Py_ssize_t t,
                                                                           Py_ssize_t first, Py_ssize_t last,
                                                                           const long long *counts, int k, double *out,
                                                                           double *means, Py_ssize_t *nonfinite,
                                                                           double *scratch, int *iscratch) {
    Py_ssize_t unsorted = 0;
    Py_ssize_t group = GROUP_ROWS(k);
    double *ta = scratch, *tb = ta + group * k, *lbk = tb + group * k, *rest = lbk + group * k;
    /* Rows of one record lie one after another: their probabilities are one loop. */
    int joined = v[1].row_stride == k * (Py_ssize_t)sizeof(float) && v[3].row_stride == k * (Py_ssize_t)sizeof(float);
    for (Py_ssize_t i = first; i < last; i++) {
        double *block = out;
        for (Py_ssize_t row = 0; row < counts[i]; row += group) {
            Py_ssize_t rows = counts[i] - row < group ? counts[i] - row : group;
#define ROW(x, type, r) ((const type *)(block_start(&v[x], i) + (row + (r)) * v[x].row_stride))
            if (joined)
                probabilities(ROW(1, float, 0), ROW(3, float, 0), rows * k, ta, tb, lbk);
            else
                for (Py_ssize_t r = 0; r < rows; r++)
                    probabilities(ROW(1, float, r), ROW(3, float, r), k, ta + r * k, tb + r * k, lbk + r * k);
            for (Py_ssize_t r = 0; r < rows; r++, out += 8)
                unsorted += position(ROW(0, long long, r), ROW(1, float, r), ROW(2, long long, r), ROW(3, float, r), k,
                                     ta + r * k, tb + r * k, lbk + r * k, out, rest, iscratch);
#undef ROW
        }
        block_means(block, counts[i], means + 8 * i);
        nonfinite[0] += block_nonfinite(&v[1], i, t, k);
        nonfinite[1] += block_nonfinite(&v[3], i, t, k);
    }
    return unsorted;
}

/* The capture agents' default top-k: rows of this width run a copy of the kernel compiled for it,
 * whose loops have a known length (10% faster when it was added). */
#define AGENT_TOP_K 20

CLONED static Py_ssize_t positions(const struct blocks *v, Py_ssize_t t, Py_ssize_t first, Py_ssize_t last,
                                   const long long *counts, int k, double *out, double *means, Py_ssize_t *nonfinite,
                                   double *scratch, int *iscratch) {
    if (k == AGENT_TOP_K)
        return positions_of_width(v, t, first, last, counts, AGENT_TOP_K, out, means, nonfinite, scratch, iscratch);
    return positions_of_width(v, t, first, last, counts, k, out, means, nonfinite, scratch, iscratch);
}

/* One position_rows call, shared by its threads: each takes the next `claim` blocks until none
 * are left, so a thread the OS runs less (the diff's reader shares the cores) simply takes fewer. */
struct job {
    const struct blocks *v; /* ids_a, lp_a, ids_b, lp_b */
    Py_ssize_t n, t, claim, next; /* next: the first block no thread has taken */
    const long long *counts;
    const Py_ssize_t *starts; /* block i's first row in out */
    int k;
    double *out, *means;
};

struct worker {
    struct job *job;
    double *scratch;
    int *iscratch;
    Py_ssize_t unsorted, nonfinite[2];
};

static void *work(void *arg) {
    struct worker *w = arg;
    struct job *job = w->job;
    for (;;) {
        Py_ssize_t first = __atomic_fetch_add(&job->next, job->claim, __ATOMIC_RELAXED);
        if (first >= job->n)
            return NULL;
        Py_ssize_t last = first + job->claim < job->n ? first + job->claim : job->n;
        w->unsorted += positions(job->v, job->t, first, last, job->counts, job->k, job->out + 8 * job->starts[first],
                                 job->means, w->nonfinite, w->scratch, w->iscratch);
    }
}

/* Runs job on up to `threads` threads, the calling one included (the GIL released throughout);
 * returns how many ran, their results in workers[0..]. A thread that cannot be started leaves its
 * share to the others. */
static int run_job(struct job *job, struct worker *workers, int threads) {
    int started = 1;
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_PTHREADS
    pthread_t ids[KERNEL_THREADS_MAX];
    for (int t = 1; t < threads; t++, started++)
        if (pthread_create(&ids[t], NULL, work, &workers[t]) != 0)
            break;
#endif
    work(&workers[0]);
#ifdef HAVE_PTHREADS
    for (int t = 1; t < started; t++)
        pthread_join(ids[t], NULL);
#endif
    Py_END_ALLOW_THREADS
    return started;
}

/* Measures n blocks of t rows of k: v holds ids_a, lp_a, ids_b, lp_b; block i's compared positions
 * are its first counts[i] (checked here: 0..t), written one block after another into out (at
 * least sum(counts) rows of 8; exactly, if exact) and averaged into means [n, 8]. Returns
 * position_rows' tuple, or NULL with an error set. */
static PyObject *measure_blocks(const char *caller, const struct blocks *v, Py_ssize_t n, Py_ssize_t t, Py_ssize_t k,
                                const long long *counts, const Py_buffer *out, int exact, const Py_buffer *means,
                                long threads) {
    if (threads < 1 || threads > KERNEL_THREADS_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: threads must be 1 to %d", caller, KERNEL_THREADS_MAX);
        return NULL;
    }
    Py_ssize_t *starts = PyMem_RawMalloc(sizeof(Py_ssize_t) * (n + 1)); /* block i's first row in out */
    double *scratch = PyMem_RawMalloc(sizeof(double) * SCRATCH_DOUBLES(k) * threads);
    int *iscratch = PyMem_RawMalloc(sizeof(int) * SCRATCH_INTS(k) * threads);
    PyObject *result = NULL;
    if (!starts || !scratch || !iscratch) {
        PyErr_NoMemory();
        goto done;
    }
    starts[0] = 0;
    Py_ssize_t i = 0;
    for (; i < n && counts[i] >= 0 && counts[i] <= t; i++)
        starts[i + 1] = starts[i] + counts[i];
    if (i < n || (exact ? out->shape[0] != starts[n] : out->shape[0] < starts[n]) || out->shape[1] != 8 ||
        means->shape[0] != n || means->shape[1] != 8 || k < 1 || k > 1 << 20) {
        PyErr_Format(PyExc_ValueError,
                     "%s: counts must be [n] within 0..T, out [sum(counts), 8], means [n, 8], K at least 1", caller);
        goto done;
    }
    struct worker workers[KERNEL_THREADS_MAX] = {{0}};
    /* Claims of about 2,048 positions: few enough atomic operations, small enough to even out. */
    struct job job = {v, n, t, t > 2048 ? 1 : 2048 / (t > 0 ? t : 1), 0, counts, starts, (int)k, out->buf, means->buf};
    for (int w = 0; w < threads; w++)
        workers[w] = (struct worker){&job, scratch + w * SCRATCH_DOUBLES(k), iscratch + w * SCRATCH_INTS(k), 0, {0, 0}};
    int ran = run_job(&job, workers, (int)threads);
    Py_ssize_t unsorted = 0, nonfinite[2] = {0, 0};
    for (int w = 0; w < ran; w++) {
        unsorted += workers[w].unsorted;
        nonfinite[0] += workers[w].nonfinite[0];
        nonfinite[1] += workers[w].nonfinite[1];
    }
    result = Py_BuildValue("nnn", unsorted, nonfinite[0], nonfinite[1]);
done:
    PyMem_RawFree(starts);
    PyMem_RawFree(scratch);
    PyMem_RawFree(iscratch);
    return result;
}

/* position_rows(ids_a, lp_a, ids_b, lp_b, counts, out, means, threads): ids int64 and logprobs
 * float32 [n, T, K], each row sorted most likely first (as records carry them), rows contiguous,
 * any other strides (strided views of record bytes); counts int64 [n]: block i's compared
 * positions are its first counts[i]; out float64 [sum(counts), 8], C-contiguous, filled block
 * after block; means float64 [n, 8]: each block's mean of its finite values (NaN for none);
 * threads: how many threads share the blocks (1 to KERNEL_THREADS_MAX). Returns (unsorted,
 * nonfinite_a, nonfinite_b): how many rows are out of order (their values are not the metrics:
 * sort them and call again), and how many of each run's logprobs, in all T rows, are NaN or
 * infinite. */
static PyObject *position_rows(PyObject *self, PyObject *args) {
    static const struct arg spec[7] = {{"ids_a", 'q', 3, VIEW}, {"lp_a", 'f', 3, VIEW}, {"ids_b", 'q', 3, VIEW},
                                       {"lp_b", 'f', 3, VIEW},  {"counts", 'q', 1, FLAT}, {"out", 'd', 2, OUT},
                                       {"means", 'd', 2, OUT}};
    if (PyTuple_GET_SIZE(args) != 8) {
        PyErr_Format(PyExc_TypeError, "expected 8 arguments, got %zd", PyTuple_GET_SIZE(args));
        return NULL;
    }
    long threads = PyLong_AsLong(PyTuple_GET_ITEM(args, 7));
    if (threads == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer v[7];
    if (get_args_from(args, 0, 7, spec, v) < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = v[0].shape[0], t = v[0].shape[1], k = v[0].shape[2];
    struct blocks blocks[4];
    int fits = v[4].shape[0] == n;
    for (int i = 0; i < 4; i++) {
        fits &= v[i].shape[0] == n && v[i].shape[1] == t && v[i].shape[2] == k && v[i].strides[2] == v[i].itemsize;
        blocks[i] = (struct blocks){v[i].buf, NULL, v[i].strides[0], v[i].strides[1]};
    }
    if (!fits)
        PyErr_SetString(PyExc_ValueError, "position_rows: inputs differ in shape or their rows are not contiguous, "
                        "or counts is not [n]");
    else
        result = measure_blocks("position_rows", blocks, n, t, k, v[4].buf, &v[5], 1, &v[6], threads);
    release_args(v, 7);
    return result;
}

/* Tensors of one run's records in stacked_rows, its records' bytes each holding them at the same
 * offsets: tokens [T] int64, ids [T, K] int64, logprobs [T, K] float32. */
enum { TOKENS, IDS, LOGPROBS, TENSORS };

/* Fills at[j * n + i] with where record i's tensor j starts, holding a reference to each record
 * (the GIL is released while they are read); 0, or -1 with an error set. */
static int record_tensors(PyObject *records, PyObject *layout, Py_ssize_t n, Py_ssize_t t, Py_ssize_t k,
                          const char **at, PyObject **held) {
    Py_ssize_t offset[TENSORS], size[TENSORS] = {t * 8, t * k * 8, t * k * 4};
    if (!PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != TENSORS) {
        PyErr_SetString(PyExc_TypeError, "stacked_rows: a layout is (tokens, ids, logprobs) byte offsets");
        return -1;
    }
    for (int j = 0; j < TENSORS; j++) {
        offset[j] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout, j));
        if (offset[j] == -1 && PyErr_Occurred())
            return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        if (!PyBytes_Check(record)) {
            PyErr_Format(PyExc_TypeError, "stacked_rows: record %zd is not bytes", i);
            return -1;
        }
        for (int j = 0; j < TENSORS; j++) {
            if (offset[j] < 0 || offset[j] + size[j] > PyBytes_GET_SIZE(record)) {
                PyErr_Format(PyExc_ValueError, "stacked_rows: record %zd is too short for its layout", i);
                return -1;
            }
            at[j * n + i] = PyBytes_AS_STRING(record) + offset[j];
        }
        Py_INCREF(record);
        held[i] = record;
    }
    return 0;
}

/* The first of t positions where two records' tokens differ, -1 for none. */
static long long first_difference(const long long *a, const long long *b, Py_ssize_t t) {
    for (Py_ssize_t j = 0; j < t; j++)
        if (a[j] != b[j])
            return j;
    return -1;
}

/* stacked_rows(records_a, records_b, layout_a, layout_b, t, k, forced, counts, divergence, out,
 * means, threads): position_rows for the same n prompts' records of two runs, read where they are:
 * records_* are lists of n bytes (as the store hands them over), every record of a run holding its
 * tensors at the byte offsets of its layout (tokens, ids, logprobs), of t positions and top-k k.
 * It also finds what to compare, so a diff's chunk is one call without the GIL and no copy:
 * divergence int64 [n] receives the first position where a prompt's two token lists differ (-1
 * for none), counts int64 [n] the positions compared (all t if forced, else up to and including
 * the divergence: after it the prefixes differ). out float64 has room for n * t rows; the first
 * sum(counts) are filled. */
static PyObject *stacked_rows(PyObject *self, PyObject *args) {
    static const struct arg spec[4] = {{"counts", 'q', 1, OUT}, {"divergence", 'q', 1, OUT}, {"out", 'd', 2, OUT},
                                       {"means", 'd', 2, OUT}};
    PyObject *records_a, *records_b, *layout_a, *layout_b, *arrays[4]; /* the arrays are taken as buffers below */
    Py_ssize_t t, k;
    int forced;
    long threads;
    if (!PyArg_ParseTuple(args, "O!O!OOnnpOOOOl:stacked_rows", &PyList_Type, &records_a, &PyList_Type, &records_b,
                          &layout_a, &layout_b, &t, &k, &forced, &arrays[0], &arrays[1], &arrays[2], &arrays[3],
                          &threads))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(records_a);
    if (PyList_GET_SIZE(records_b) != n || t < 0 || k < 1) {
        PyErr_SetString(PyExc_ValueError, "stacked_rows: both runs need the same number of records, T >= 0, K >= 1");
        return NULL;
    }
    Py_buffer v[4];
    if (get_args_from(args, 7, 4, spec, v) < 0)
        return NULL;
    PyObject *result = NULL;
    const char **at = PyMem_RawMalloc(sizeof(char *) * 2 * TENSORS * (n + 1));
    PyObject **held = PyMem_RawCalloc(2 * n + 1, sizeof(PyObject *));
    if (!at || !held) {
        PyErr_NoMemory();
        goto done;
    }
    if (v[0].shape[0] != n || v[1].shape[0] != n || v[2].shape[0] < n * t) {
        PyErr_SetString(PyExc_ValueError, "stacked_rows: counts and divergence must be [n], out [n * T, 8]");
        goto done;
    }
    const char **at_a = at, **at_b = at + TENSORS * n;
    if (record_tensors(records_a, layout_a, n, t, k, at_a, held) < 0 ||
        record_tensors(records_b, layout_b, n, t, k, at_b, held + n) < 0)
        goto done;
    long long *counts = v[0].buf, *divergence = v[1].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        divergence[i] = first_difference((const long long *)at_a[TOKENS * n + i],
                                         (const long long *)at_b[TOKENS * n + i], t);
        counts[i] = forced || divergence[i] < 0 ? t : divergence[i] + 1;
    }
    struct blocks blocks[4] = {{NULL, at_a + IDS * n, 0, k * 8},
                               {NULL, at_a + LOGPROBS * n, 0, k * 4},
                               {NULL, at_b + IDS * n, 0, k * 8},
                               {NULL, at_b + LOGPROBS * n, 0, k * 4}};
    result = measure_blocks("stacked_rows", blocks, n, t, k, counts, &v[2], 0, &v[3], threads);
done:
    if (held)
        for (Py_ssize_t i = 0; i < 2 * n; i++)
            Py_XDECREF(held[i]);
    PyMem_RawFree(held);
    PyMem_RawFree(at);
    release_args(v, 4);
    return result;
}

static PyMethodDef methods[] = {
    {"embed_rows", embed_rows, METH_VARARGS, "Per-row cos, mse and max_abs of two float32 embedding matrices."},
    {"sample_rows", sample_rows, METH_VARARGS, "Normalises sampled embedding rows and bins their element errors."},
    {"position_rows", position_rows, METH_VARARGS, "The logprob position metrics of stacked top-k rows."},
    {"stacked_rows", stacked_rows, METH_VARARGS, "position_rows for two runs' records read where they are."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
#if HAVE_AVX2
    const char *want = getenv("CMP_KERNELS");
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(want && !strcmp(want, "portable"));
#endif
    if (PyModule_AddStringConstant(m, "ISA", use_avx2 ? "avx2" : "portable") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
