/*
 * The fused row kernel of float32 logsumexp, log_softmax, softmax and
 * cross_entropy on the CPU: each row's maximum, the float64 sum of its
 * shifted exponentials and, for the normalisations, its output, in three
 * passes over a row that stays in cache between them (one pass over
 * memory), where the libraries' own operations take one pass over memory
 * each.
 *
 * Precision. Each shift d = x - m is formed in float64, where it is exact
 * up to 2**-53 relative (the float32 difference rounds by up to |d| ulps
 * of the term, hundreds far below the maximum). exp(d) is a float64
 * polynomial within 2**-33 relative (below), so that each term is good to
 * a hundredth of a float32 ulp, and the terms are summed in float64. Of
 * the row's maxima, ties included, none enters the sum: each counts as an
 * exact 1, so that t = sum - 1 keeps the terms below eps instead of
 * rounding them away against the maximum's 1. log_softmax is (x - m) -
 * log1p(t), formed in float64 and rounded once; softmax is exp(d) rounded
 * to float32, times 1 / (1 + t) rounded to float32, rounded: within 1.5
 * ulps and t's own error (at the maxima, exp(0) is exactly 1).
 *
 * A row whose maximum is not finite (an infinity or a NaN in it, or no
 * finite entry) has its m and t NaN or infinite, for the caller to tell
 * apart; its normalised row is the standard-only path's (row_special).
 * The caller rounds m + log1p(t) and checks the rounding of rows with a
 * dominant term.
 *
 * Callers: Python's buffers (rows() and the loss's loss(), for NumPy and
 * PyTorch) and XLA's typed custom calls (xla(), for jax.ffi.ffi_call).
 *
 * The vector paths (AVX2 and FMA, or AVX-512, chosen at run time) and the
 * scalar one compute the same formulas; the vector ones fuse the
 * polynomial's multiplications and additions, and differ from the scalar
 * one in the last bits of float64. AVX-512 takes y - floor(y) in one
 * instruction, AVX2 in two, which round differently where y < 0 (by
 * 2**-54 at most), and sums the terms in a different order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LSE_X86 1
#include <immintrin.h>
#else
#define LSE_X86 0
#endif

/* SLOPE: the rows of the closed-form gradient of logsumexp and the loss,
 * exp(x - m) times a scale per row, both given (m the row's maximum). */
enum { SPLIT = 0, LOG_SOFTMAX = 1, SOFTMAX = 2, SLOPE = 3 };

/* exp(d) = 2**(y - 1/2), y = d / ln 2 + 1/2, = 2**k p(u), k = floor(y), u
 * = y - k in [0, 1), p(u) the degree-7 interpolant of 2**(u - 1/2) at
 * Chebyshev nodes of [0, 1]: within 2**-34 relative. y is within 2**-43
 * of its own (|y| < 1024 rounded once, or twice without a fused
 * multiply-add, and 1 / ln 2's rounding), and u of y - k (exact, or within
 * 2**-54 where y < 0): the term's relative error, at most, that they
 * cost. The argument is so reduced in two operations on AVX-512
 * (vreducepd gives u, and vscalefpd takes y for 2**k) and three on AVX2,
 * where d - k ln 2 in two parts, for an interval half as wide, took four:
 * the sums' pass is mostly these operations. 2**k is built from its
 * exponent bits, which are all 0, giving 0, at k = -1023: below -709,
 * where the argument is raised to -709, every term is 0, -inf's included.
 * Terms from -709 to -708.7 (k = -1023) are lost, and those down to -708
 * lose digits below float64's smallest normal number, 2**-1022 at most:
 * far below anything a float32 result holds. */
#define INV_LN2 0x1.71547652b82fep+0
#define ROUNDER 0x1.8p52
#define LOWEST (-709.0)
#define P0 0x1.6a09e6679e1eep-1
#define P1 0x1.f5e4658d3cb6bp-2
#define P2 0x1.5be28aaece3a3p-3
#define P3 0x1.41855c0729306p-5
#define P4 0x1.bd807257b729cp-8
#define P5 0x1.f1dd35498219ep-11
#define P6 0x1.a8302b9a81ae0p-14
#define P7 0x1.00c0e4e15189cp-16

/* p(u) by Horner's rule, for each path: `mul_add(a, b, c)` is a * b + c
 * (fused in the vector paths), `splat(v)` the constant v in each lane. */
#define EXP_POLY(mul_add, splat, u)                                                    \
    mul_add(                                                                           \
        mul_add(                                                                       \
            mul_add(mul_add(mul_add(mul_add(mul_add(splat(P7), u, splat(P6)), u,        \
                                            splat(P5)),                                \
                                    u, splat(P4)),                                     \
                            u, splat(P3)),                                             \
                    u, splat(P2)),                                                     \
            u, splat(P1)),                                                             \
        u, splat(P0))

static inline double mul_add(double a, double b, double c) { return a * b + c; }
#define SCALAR(v) (v)

/* exp(d) for d <= 0 (NaN gives NaN). */
static inline double exp_shifted(double d)
{
    d = d < LOWEST ? LOWEST : d;
    double y = d * INV_LN2 + 0.5;
    double k = floor(y);
    double u = y - k;
    double p = EXP_POLY(mul_add, SCALAR, u);
    /* k's bits, as an integer in the low bits of k + ROUNDER. */
    double kr = k + ROUNDER, rounder = ROUNDER;
    int64_t kbits, rbits, sbits;
    memcpy(&kbits, &kr, sizeof kbits);
    memcpy(&rbits, &rounder, sizeof rbits);
    sbits = (int64_t)((uint64_t)(kbits - rbits + 1023) << 52);
    double scale;
    memcpy(&scale, &sbits, sizeof scale);
    return p * scale;
}

typedef struct {
    const float *x;
    float *out;
    double *m, *t, *total;
    Py_ssize_t n, r0, r1;
    int kind;
} Job;

/* Each row's maximum, NaN where the row holds one; its float64 sum of
 * entries into *total where total is not NULL. */
static float row_max_scalar(const float *x, Py_ssize_t n, double *total)
{
    float mx = -INFINITY;
    int nan = 0;
    double s = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = x[i];
        mx = v > mx ? v : mx;
        nan |= v != v;
        s += v;
    }
    if (total)
        *total = s;
    return nan ? NAN : mx;
}

/* The sum of exp(x - m) over the entries other than m, and their count. */
static double row_sum_scalar(const float *x, Py_ssize_t n, double m, float *keep,
                             double *ties)
{
    double s = 0.0, c = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double d = (double)x[i] - m;
        double e = exp_shifted(d);
        if (keep)
            keep[i] = (float)e;
        if (d == 0.0)
            c += 1.0;
        else
            s += e;
    }
    *ties = c;
    return s;
}

/* exp(x - m) scale, rounded once to float32: the shift exact, as in the
 * sums, where a float32 shift would cost |x - m| ulps of the term. */
static void row_slope_scalar(const float *x, Py_ssize_t n, double m, double scale,
                             float *out)
{
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = (float)(exp_shifted((double)x[i] - m) * scale);
}

static void row_out_scalar(const float *x, Py_ssize_t n, double m, double low,
                           double inv, float *out, int kind)
{
    if (kind == LOG_SOFTMAX) {
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = (float)(((double)x[i] - m) - low);
    } else {
        float f = (float)inv;
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] *= f;
    }
}

#if LSE_X86
#define VEC __attribute__((target("avx2,fma")))

VEC static inline __m256d exp_shifted4(__m256d d)
{
    /* max(LOWEST, d): the second operand where either is NaN. */
    d = _mm256_max_pd(_mm256_set1_pd(LOWEST), d);
    __m256d y = _mm256_fmadd_pd(d, _mm256_set1_pd(INV_LN2), _mm256_set1_pd(0.5));
    __m256d k = _mm256_floor_pd(y);
    __m256d p = EXP_POLY(_mm256_fmadd_pd, _mm256_set1_pd, _mm256_sub_pd(y, k));
    __m256d rounder = _mm256_set1_pd(ROUNDER);
    __m256i kbits = _mm256_castpd_si256(_mm256_add_pd(k, rounder));
    __m256i bias = _mm256_sub_epi64(_mm256_castpd_si256(rounder), _mm256_set1_epi64x(1023));
    __m256i sbits = _mm256_slli_epi64(_mm256_sub_epi64(kbits, bias), 52);
    return _mm256_mul_pd(p, _mm256_castsi256_pd(sbits));
}

VEC static inline double hsum4(__m256d v)
{
    __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
    lo = _mm_add_pd(lo, hi);
    return _mm_cvtsd_f64(_mm_add_sd(lo, _mm_unpackhi_pd(lo, lo)));
}

VEC static float row_max_vec(const float *x, Py_ssize_t n, double *total)
{
    __m256 mx = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        mx = _mm256_max_ps(mx, v);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        if (total) {
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, mx);
    int any_nan = _mm256_movemask_ps(nan) != 0;
    float m = -INFINITY;
    for (int j = 0; j < 8; j++)
        m = lanes[j] > m ? lanes[j] : m;
    double rest = 0.0;
    float mrest = row_max_scalar(x + i, n - i, total ? &rest : NULL);
    if (mrest != mrest)
        any_nan = 1;
    m = mrest > m ? mrest : m;
    if (total)
        *total = hsum4(_mm256_add_pd(s0, s1)) + rest;
    return any_nan ? NAN : m;
}

VEC static double row_sum_vec(const float *x, Py_ssize_t n, double m, float *keep,
                              double *ties, const float *ahead)
{
    __m256d mv = _mm256_set1_pd(m), one = _mm256_set1_pd(1.0);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    __m256d c0 = _mm256_setzero_pd(), c1 = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_prefetch((const char *)(ahead + i), _MM_HINT_T1);
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), mv);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), mv);
        __m256d e0 = exp_shifted4(d0), e1 = exp_shifted4(d1);
        if (keep) {
            __m128 f0 = _mm256_cvtpd_ps(e0), f1 = _mm256_cvtpd_ps(e1);
            _mm256_storeu_ps(keep + i, _mm256_set_m128(f1, f0));
        }
        __m256d z0 = _mm256_cmp_pd(d0, _mm256_setzero_pd(), _CMP_EQ_OQ);
        __m256d z1 = _mm256_cmp_pd(d1, _mm256_setzero_pd(), _CMP_EQ_OQ);
        s0 = _mm256_add_pd(s0, _mm256_andnot_pd(z0, e0));
        s1 = _mm256_add_pd(s1, _mm256_andnot_pd(z1, e1));
        c0 = _mm256_add_pd(c0, _mm256_and_pd(z0, one));
        c1 = _mm256_add_pd(c1, _mm256_and_pd(z1, one));
    }
    double c_rest;
    double s = row_sum_scalar(x + i, n - i, m, keep ? keep + i : NULL, &c_rest);
    *ties = hsum4(_mm256_add_pd(c0, c1)) + c_rest;
    return hsum4(_mm256_add_pd(s0, s1)) + s;
}

VEC static void row_slope_vec(const float *x, Py_ssize_t n, double m, double scale,
                              float *out)
{
    __m256d mv = _mm256_set1_pd(m), sv = _mm256_set1_pd(scale);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), mv);
        _mm_storeu_ps(out + i, _mm256_cvtpd_ps(_mm256_mul_pd(exp_shifted4(d), sv)));
    }
    row_slope_scalar(x + i, n - i, m, scale, out + i);
}

VEC static void row_out_vec(const float *x, Py_ssize_t n, double m, double low,
                            double inv, float *out, int kind)
{
    Py_ssize_t i = 0;
    if (kind == LOG_SOFTMAX) {
        __m256d mv = _mm256_set1_pd(m), lv = _mm256_set1_pd(low);
        for (; i + 8 <= n; i += 8) {
            __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), mv);
            __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), mv);
            _mm_storeu_ps(out + i, _mm256_cvtpd_ps(_mm256_sub_pd(d0, lv)));
            _mm_storeu_ps(out + i + 4, _mm256_cvtpd_ps(_mm256_sub_pd(d1, lv)));
        }
    } else {
        __m256 iv = _mm256_set1_ps((float)inv);
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), iv));
    }
    row_out_scalar(x + i, n - i, m, low, inv, out + i, kind);
}

/* The sums of AVX-512: eight float64 lanes per instruction where AVX2 has
 * four, the scaling by 2**k in one instruction (vscalefpd) where AVX2
 * builds it from the exponent's bits, and the ties at the maximum counted
 * from a float32 mask (x == m exactly where d is 0). On the CPUs measured,
 * the sum took about two thirds of AVX2's time. */
#define VEC512 __attribute__((target("avx512f,avx512dq,avx2,fma,popcnt,prfchw")))

VEC512 static inline __m512d exp_shifted8(__m512d d)
{
    __m512d y = _mm512_fmadd_pd(d, _mm512_set1_pd(INV_LN2), _mm512_set1_pd(0.5));
    /* y - floor(y), exact (imm 9: round down, no precision exception). */
    __m512d p = EXP_POLY(_mm512_fmadd_pd, _mm512_set1_pd, _mm512_reduce_pd(y, 9));
    /* 0 at k = floor(y) <= -1023, as AVX2's exponent bits give it; -inf
     * (NaN in p) and every d below -709 included, without AVX2's bound. */
    __mmask8 normal = _mm512_cmp_pd_mask(y, _mm512_set1_pd(-1022.0), _CMP_GE_OQ);
    return _mm512_maskz_scalef_pd(normal, p, y);
}

VEC512 static double row_sum_512(const float *x, Py_ssize_t n, double m, float *keep,
                                 double *ties, const float *ahead, float *written)
{
    __m512d mv = _mm512_set1_pd(m);
    __m512 mf = _mm512_set1_ps((float)m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    long long c = 0;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch((const char *)(ahead + i), _MM_HINT_T1);
        if (written)
            __builtin_prefetch(written + i, 1, 2);
        __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), mv);
        __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), mv);
        __m512d e0 = exp_shifted8(d0), e1 = exp_shifted8(d1);
        if (keep) {
            _mm256_storeu_ps(keep + i, _mm512_cvtpd_ps(e0));
            _mm256_storeu_ps(keep + i + 8, _mm512_cvtpd_ps(e1));
        }
        __mmask16 z = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), mf, _CMP_EQ_OQ);
        c += __builtin_popcount((unsigned)z);
        s0 = _mm512_mask_add_pd(s0, (__mmask8)~z, s0, e0);
        s1 = _mm512_mask_add_pd(s1, (__mmask8)~(z >> 8), s1, e1);
    }
    double c_rest;
    double s = row_sum_vec(x + i, n - i, m, keep ? keep + i : NULL, &c_rest, ahead + i);
    *ties = (double)c + c_rest;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) + s;
}

VEC512 static void row_slope_512(const float *x, Py_ssize_t n, double m, double scale,
                                 float *out)
{
    __m512d mv = _mm512_set1_pd(m), sv = _mm512_set1_pd(scale);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), mv);
        _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(_mm512_mul_pd(exp_shifted8(d), sv)));
    }
    row_slope_vec(x + i, n - i, m, scale, out + i);
}

/* The vector path in use: 0 none, 1 AVX2 and FMA, 2 AVX-512 as well; -1
 * until the CPU is asked. */
static int vector_level = -1;

static int supported(void)
{
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return 0;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("popcnt")
               ? 2
               : 1;
}

static int use_vector(void)
{
    if (vector_level < 0)
        vector_level = supported();
    return vector_level;
}
#endif

/* vector(level): the vector path to use, at most `level` (0 none, 1 AVX2
 * and FMA, 2 AVX-512) and what the CPU has; returns the one in use. */
static PyObject *vector(PyObject *self, PyObject *args)
{
    int level;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &level))
        return NULL;
#if LSE_X86
    int best = supported();
    vector_level = level < 0 ? 0 : level > best ? best : level;
    return PyLong_FromLong(vector_level);
#else
    (void)level;
    return PyLong_FromLong(0);
#endif
}

/* A row whose maximum is not finite, as the standard-only path gives it:
 * NaN throughout where it holds a NaN; where its maximum is +inf, NaN at
 * each +inf (inf - inf) and an empty share elsewhere; where every entry is
 * -inf, an empty share throughout (log 0 or 0). */
static void row_special(const float *x, Py_ssize_t n, float mf, float *out, int kind)
{
    float none = kind == LOG_SOFTMAX ? -INFINITY : 0.0f;
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = mf != mf || x[i] == INFINITY ? NAN : none;
}

static void run_rows(const Job *job)
{
    Py_ssize_t n = job->n;
#if LSE_X86
    int vec = use_vector();
#endif
    for (Py_ssize_t r = job->r0; r < job->r1; r++) {
        const float *x = job->x + r * n;
        if (job->kind == SLOPE) {
            float *slope = job->out + r * n;
#if LSE_X86
            if (vec == 2)
                row_slope_512(x, n, job->m[r], job->t[r], slope);
            else if (vec)
                row_slope_vec(x, n, job->m[r], job->t[r], slope);
            else
#endif
                row_slope_scalar(x, n, job->m[r], job->t[r], slope);
            continue;
        }
        double *total = job->total ? job->total + r : NULL;
        float *keep = job->kind == SOFTMAX ? job->out + r * n : NULL;
        double ties, s;
        float mf;
#if LSE_X86
        /* The sums' pass is arithmetic on a row in cache and the maxima's
         * a read from memory: the vector sums prefetch the next row into
         * L2 as they go, so that the two overlap (at (512, 8192) float32,
         * a tenth of the call). The last row prefetches itself, for
         * nothing. AVX-512's, whose CPUs have PREFETCHW, prefetch
         * log_softmax's output row for writing too, which its last pass
         * writes: its reads for ownership overlap them as well. */
        const float *ahead = r + 1 < job->r1 ? x + n : x;
        float *written = job->kind == LOG_SOFTMAX ? job->out + r * n : NULL;
        if (vec) {
            mf = row_max_vec(x, n, total);
            if (!isfinite(mf))
                s = NAN;
            else if (vec == 2)
                s = row_sum_512(x, n, mf, keep, &ties, ahead, written);
            else
                s = row_sum_vec(x, n, mf, keep, &ties, ahead);
        } else
#endif
        {
            mf = row_max_scalar(x, n, total);
            s = isfinite(mf) ? row_sum_scalar(x, n, mf, keep, &ties) : NAN;
        }
        double m = mf;
        /* Each tie beyond the first adds an exact 1. */
        double t = isfinite(mf) ? s + (ties - 1.0) : NAN;
        double low = log1p(t);
        job->m[r] = m;
        job->t[r] = t;
        if (job->kind == SPLIT)
            continue;
        float *out = job->out + r * n;
        if (!isfinite(mf))
            row_special(x, n, mf, out, job->kind);
#if LSE_X86
        else if (vec)
            row_out_vec(x, n, m, low, 1.0 / (1.0 + t), out, job->kind);
#endif
        else
            row_out_scalar(x, n, m, low, 1.0 / (1.0 + t), out, job->kind);
    }
}

static void *run_thread(void *arg)
{
    run_rows((const Job *)arg);
    return NULL;
}

#define MAX_THREADS 64

/* An OpenMP runtime already in the process (PyTorch's), whose threads wait
 * for work between its operations, spinning for a while: threads of our
 * own would compete with them for the cores, where its team takes our
 * rows at once. Set by pool(); NULL: threads of our own. */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn gomp_parallel = NULL;
static omp_int_fn omp_thread_num = NULL, omp_num_threads = NULL;

typedef struct {
    Job job;
    Py_ssize_t nrows;
} Team;

static void run_member(void *arg)
{
    const Team *team = (const Team *)arg;
    Job job = team->job;
    Py_ssize_t id = omp_thread_num(), size = omp_num_threads();
    job.r0 = team->job.r0 + team->nrows * id / size;
    job.r1 = team->job.r0 + team->nrows * (id + 1) / size;
    run_rows(&job);
}

static void *address(unsigned long long a) { return (void *)(uintptr_t)a; }

static PyObject *pool(PyObject *self, PyObject *args)
{
    unsigned long long parallel, thread_num, num_threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKK", &parallel, &thread_num, &num_threads))
        return NULL;
    gomp_parallel = (gomp_parallel_fn)address(parallel);
    omp_thread_num = (omp_int_fn)address(thread_num);
    omp_num_threads = (omp_int_fn)address(num_threads);
    Py_RETURN_NONE;
}

/* The rows r0 to r1 of `job` split among `threads` threads: the OpenMP
 * team set by pool() where `shared`, threads of our own otherwise. */
static void run_split(const Job *job, int threads, int shared)
{
    Py_ssize_t nrows = job->r1 - job->r0;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > nrows)
        threads = (int)nrows;
    if (threads <= 1) {
        run_rows(job);
    } else if (shared && gomp_parallel) {
        Team team = {*job, nrows};
        gomp_parallel(run_member, &team, (unsigned)threads, 0);
    } else {
        Job jobs[MAX_THREADS];
        pthread_t ids[MAX_THREADS];
        int started[MAX_THREADS] = {0};
        for (int j = 0; j < threads; j++) {
            jobs[j] = *job;
            jobs[j].r0 = job->r0 + nrows * j / threads;
            jobs[j].r1 = job->r0 + nrows * (j + 1) / threads;
        }
        for (int j = 1; j < threads; j++)
            started[j] = pthread_create(&ids[j], NULL, run_thread, &jobs[j]) == 0;
        run_rows(&jobs[0]);
        for (int j = 1; j < threads; j++) {
            if (started[j])
                pthread_join(ids[j], NULL);
            else
                run_rows(&jobs[j]);
        }
    }
}

/* A job over the `nrows` rows of `n` entries of `x`, all of them. */
static Job new_job(const float *x, float *out, double *m, double *t, double *total,
                   Py_ssize_t nrows, Py_ssize_t n, int kind)
{
    Job job;
    job.x = x;
    job.out = out;
    job.m = m;
    job.t = t;
    job.total = total;
    job.n = n;
    job.kind = kind;
    job.r0 = 0;
    job.r1 = nrows;
    return job;
}

/* Releases the buffers of `views` that were taken. */
static void release(Py_buffer **views, int count)
{
    for (int i = 0; i < count; i++)
        if (views[i]->obj)
            PyBuffer_Release(views[i]);
}

/* A C-contiguous buffer of `size` bytes from `obj`, writable unless
 * `input`, or none where obj is None and `optional`. */
static int take_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t size, int optional,
                       const char *name, int input)
{
    view->obj = NULL;
    view->buf = NULL;
    if (obj == Py_None && optional)
        return 0;
    int flags = input ? PyBUF_C_CONTIGUOUS : PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS;
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->len != size) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, not %zd", name,
                     view->len, size);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

/* A writable buffer of `size` bytes from `obj` (take_buffer). */
static int take(PyObject *obj, Py_buffer *view, Py_ssize_t size, int optional,
                const char *name)
{
    return take_buffer(obj, view, size, optional, name, 0);
}

/* The memory of `obj`, `size` bytes: a buffer (take_buffer) or, as a
 * Python int, the address of memory that the caller holds and answers
 * for (a tensor's data_ptr(): PyTorch's own view of its memory as a NumPy
 * array costs a small batch's call a microsecond or more). */
static int take_memory(PyObject *obj, Py_buffer *view, Py_ssize_t size, int optional,
                       const char *name, int input)
{
    if (!PyLong_Check(obj))
        return take_buffer(obj, view, size, optional, name, input);
    view->obj = NULL;
    view->buf = PyLong_AsVoidPtr(obj);
    return view->buf == NULL && PyErr_Occurred() ? -1 : 0;
}

/* A writable buffer of float64, one per row, from `obj`: its length gives
 * `nrows`, the number of rows of the call. */
static int take_rows(PyObject *obj, Py_buffer *view, Py_ssize_t *nrows)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        view->obj = NULL;
        return -1;
    }
    *nrows = view->len / (Py_ssize_t)sizeof(double);
    return 0;
}

/* The number of rows whose maximum is not finite: those left to the
 * caller. */
static Py_ssize_t not_finite(const double *m, Py_ssize_t nrows)
{
    Py_ssize_t left = 0;
    for (Py_ssize_t r = 0; r < nrows; r++)
        left += !isfinite(m[r]);
    return left;
}

static PyObject *rows(PyObject *self, PyObject *args)
{
    Py_buffer xv, outv, mv, tv, totalv;
    PyObject *x, *out, *m, *t, *total;
    Py_ssize_t n, nrows;
    int kind, threads, shared;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOniip", &x, &out, &m, &t, &total, &n, &kind,
                          &threads, &shared))
        return NULL;
    PyObject *result = NULL;
    xv.obj = outv.obj = mv.obj = tv.obj = totalv.obj = NULL;
    if (n <= 0 || kind < SPLIT || kind > SLOPE) {
        PyErr_Format(PyExc_ValueError, "no kernel of kind %d over rows of %zd", kind, n);
        goto done;
    }
    if (take_rows(m, &mv, &nrows) < 0)
        goto done;
    Py_ssize_t narrow = nrows * n * (Py_ssize_t)sizeof(float);
    Py_ssize_t wide = nrows * (Py_ssize_t)sizeof(double);
    if (take_memory(x, &xv, narrow, 0, "x", 1) < 0 ||
        take_memory(out, &outv, narrow, kind == SPLIT, "out", 0) < 0 ||
        take(t, &tv, wide, 0, "t") < 0 || take(total, &totalv, wide, 1, "total") < 0)
        goto done;
    Job proto = new_job(xv.buf, outv.buf, mv.buf, tv.buf, totalv.buf, nrows, n, kind);
    Py_ssize_t left = 0;
    Py_BEGIN_ALLOW_THREADS;
    run_split(&proto, threads, shared);
    if (kind != SLOPE)
        left = not_finite(mv.buf, nrows);
    Py_END_ALLOW_THREADS;
    result = PyLong_FromSsize_t(left);
done:;
    Py_buffer *views[5] = {&xv, &outv, &mv, &tv, &totalv};
    release(views, 5);
    return result;
}

/* The loss of row r of `job`, of class c, smoothed by eps, with low =
 * log1p(t): (m - x[c]) + low, two non-negative terms, so that a confident
 * prediction's tiny loss keeps its digits, rounded once; m - x[c] of two
 * float32 numbers is exact in float64 unless their exponents lie 29
 * apart, and then within a float64 ulp. Smoothed, (1 - eps) (m - x[c]) +
 * low + eps / n (n m - sum(x)): n m is exact, and sum(x), in float64 in
 * any order, is within (n - 1) 2**-53 (n |m| + spread), which must stay
 * under a sixteenth of an ulp of the loss. Returns 0, with the loss NaN,
 * where the row is not done: its maximum is not finite, its class is out
 * of range, or the smoothed sum's rounding is too large. */
static int row_loss(const Job *job, Py_ssize_t r, int64_t c, double eps, double low,
                    double *loss)
{
    double m = job->m[r], n = (double)job->n;
    *loss = NAN;
    if (!isfinite(m) || c < 0 || c >= job->n)
        return 0;
    double gap = m - (double)job->x[r * job->n + c];
    if (eps == 0.0) {
        *loss = gap + low;
        return 1;
    }
    double spread = n * m - job->total[r];
    *loss = (1.0 - eps) * gap + low + (eps / n) * spread;
    return spread < INFINITY && eps * 0x1p-52 * (n * fabs(m) + spread) <= 0x1p-28 * *loss;
}

/* loss(x, target, loss, m, low, ok, total, n, ignore, smoothing, threads,
 * shared): each row's loss in float64 (row_loss), of the int64 classes
 * `target`, 0 where the class is `ignore` (None: none), into `loss`; its
 * maximum and low = log1p(t) (for the gradient) into `m` and `low`, and
 * into the bytes `ok` 1 where the row is done (an ignored row is done
 * wherever its maximum is finite). `total`, each row's sum of entries, is
 * the smoothing's scratch (None without smoothing). Returns the number of
 * rows not done. The call's rows are as many as `loss` has entries, and
 * `x` is a buffer or an address (take_memory). */
static PyObject *loss(PyObject *self, PyObject *args)
{
    Py_buffer xv, cv, lossv, mv, lowv, okv, totalv;
    PyObject *x, *target, *out, *m, *low, *ok, *total, *ignore;
    Py_ssize_t n, nrows;
    double eps;
    int threads, shared;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOnOdip", &x, &target, &out, &m, &low, &ok,
                          &total, &n, &ignore, &eps, &threads, &shared))
        return NULL;
    PyObject *result = NULL;
    long long skip = 0;
    int skipping = ignore != Py_None;
    xv.obj = cv.obj = lossv.obj = mv.obj = lowv.obj = okv.obj = totalv.obj = NULL;
    if (n <= 0) {
        PyErr_Format(PyExc_ValueError, "no loss over rows of %zd", n);
        goto done;
    }
    if (skipping && (skip = PyLong_AsLongLong(ignore)) == -1 && PyErr_Occurred())
        goto done;
    if (eps != 0.0 && total == Py_None) {
        PyErr_SetString(PyExc_ValueError, "smoothing takes each row's total");
        goto done;
    }
    if (take_rows(out, &lossv, &nrows) < 0)
        goto done;
    Py_ssize_t wide = nrows * (Py_ssize_t)sizeof(double);
    if (take_memory(x, &xv, nrows * n * (Py_ssize_t)sizeof(float), 0, "x", 1) < 0 ||
        take_buffer(target, &cv, nrows * (Py_ssize_t)sizeof(int64_t), 0, "target", 1) < 0 ||
        take(m, &mv, wide, 0, "m") < 0 || take(low, &lowv, wide, 0, "low") < 0 ||
        take(ok, &okv, nrows, 0, "ok") < 0 || take(total, &totalv, wide, 1, "total") < 0)
        goto done;
    /* t, then log1p(t) in its place. */
    Job job = new_job(xv.buf, NULL, mv.buf, lowv.buf, totalv.buf, nrows, n, SPLIT);
    const int64_t *c = cv.buf;
    double *losses = lossv.buf;
    unsigned char *done = okv.buf;
    Py_ssize_t left = 0;
    Py_BEGIN_ALLOW_THREADS;
    run_split(&job, threads, shared);
    for (Py_ssize_t r = 0; r < nrows; r++) {
        double lo = log1p(job.t[r]);
        job.t[r] = lo;
        if (skipping && c[r] == skip) {
            losses[r] = 0.0;
            done[r] = isfinite(job.m[r]);
        } else {
            done[r] = (unsigned char)row_loss(&job, r, c[r], eps, lo, &losses[r]);
        }
        left += !done[r];
    }
    Py_END_ALLOW_THREADS;
    result = PyLong_FromSsize_t(left);
done:;
    Py_buffer *views[7] = {&xv, &cv, &lossv, &mv, &lowv, &okv, &totalv};
    release(views, 7);
    return result;
}

/* XLA's typed custom calls (its FFI), declared here from the stable C ABI
 * of xla/ffi/api/c_api.h, version 0.3, whose structs only grow at their
 * ends: no build-time dependency on jaxlib. A handler gets a call frame of
 * its arguments and results, buffers, and returns NULL or an error. */
typedef struct XlaExtension {
    size_t struct_size;
    int type; /* 1: the metadata query */
    struct XlaExtension *next;
} XlaExtension;

typedef struct {
    size_t struct_size;
    XlaExtension *extension_start;
    int major_version, minor_version;
} XlaVersion;

typedef struct XlaError XlaError;

typedef struct {
    size_t struct_size;
    XlaExtension *extension_start;
    const char *message;
    int errc; /* 3: invalid argument */
} XlaErrorArgs;

typedef struct {
    size_t struct_size;
    XlaExtension *extension_start;
    XlaVersion api_version;
    const void *internal_api;
    XlaError *(*error_create)(XlaErrorArgs *args);
    /* further entries not used */
} XlaApi;

typedef struct {
    size_t struct_size;
    XlaExtension *extension_start;
    int dtype; /* 11: F32, 12: F64 */
    void *data;
    int64_t rank;
    int64_t *dims;
} XlaBuffer;

typedef struct {
    size_t struct_size;
    XlaExtension *extension_start;
    int64_t size;
    int *types; /* 1: buffer */
    void **items;
} XlaList;

typedef struct {
    size_t struct_size;
    XlaExtension *extension_start;
    int64_t size;
    int *types;
    void **names;
    void **attrs;
} XlaAttrs;

typedef struct {
    size_t struct_size;
    XlaExtension *extension_start;
    const XlaApi *api;
    void *ctx;
    int stage; /* 3: execute */
    XlaList args, rets;
    XlaAttrs attrs;
    void *future;
} XlaFrame;

typedef struct {
    size_t struct_size;
    XlaVersion api_version;
    uint32_t traits;
    int64_t state_type_id;
} XlaMetadata;

typedef struct {
    XlaExtension base;
    XlaMetadata *metadata;
} XlaMetadataExtension;

enum {
    XLA_S32 = 4,
    XLA_S64 = 5,
    XLA_F32 = 11,
    XLA_F64 = 12,
    XLA_EXECUTE = 3,
    XLA_INVALID = 3,
    XLA_SCALAR = 3, /* an attribute's type */
};

/* Threads for calls of at least xla_parallel entries, set by xla(). */
static int xla_threads = 1;
static Py_ssize_t xla_parallel = 0;

static XlaError *xla_error(const XlaFrame *frame, const char *message)
{
    XlaErrorArgs args = {sizeof(XlaErrorArgs), NULL, message, XLA_INVALID};
    return frame->api->error_create(&args);
}

/* The buffer `i` of `list`, where it holds `count` values of `dtype`. */
static float *xla_buffer(const XlaList *list, int64_t i, int dtype, Py_ssize_t count)
{
    if (i >= list->size || list->types[i] != 1)
        return NULL;
    const XlaBuffer *b = (const XlaBuffer *)list->items[i];
    Py_ssize_t size = 1;
    for (int64_t d = 0; d < b->rank; d++)
        size *= (Py_ssize_t)b->dims[d];
    return b->dtype == dtype && size == count ? (float *)b->data : NULL;
}

/* Answers XLA's metadata query, where the frame is one: the FFI version
 * the handlers speak, no traits, no state. */
static int xla_metadata(XlaFrame *frame)
{
    XlaExtension *ext = frame->extension_start;
    if (!ext || ext->type != 1)
        return 0;
    XlaMetadata *meta = ((XlaMetadataExtension *)ext)->metadata;
    XlaVersion version = {sizeof(XlaVersion), NULL, 0, 3};
    meta->api_version = version;
    meta->traits = 0;
    if (meta->struct_size >= sizeof(XlaMetadata))
        meta->state_type_id = 0;
    return 1;
}

/* The float32 rows of the last axis of argument 0, where the call is an
 * execution with `args` arguments; NULL with *error set otherwise. */
static const float *xla_input(XlaFrame *frame, int64_t args, Py_ssize_t *nrows,
                              Py_ssize_t *n, XlaError **error)
{
    *error = NULL;
    if (frame->stage != XLA_EXECUTE) {
        *error = xla_error(frame, "lsekit rows: called outside execution");
        return NULL;
    }
    if (frame->args.size != args || frame->args.types[0] != 1) {
        *error = xla_error(frame, args == 1 ? "lsekit rows: takes one buffer"
                                            : "lsekit rows: takes rows and their targets");
        return NULL;
    }
    const XlaBuffer *x = (const XlaBuffer *)frame->args.items[0];
    if (x->dtype != XLA_F32 || x->rank < 1) {
        *error = xla_error(frame, "lsekit rows: takes float32 rows");
        return NULL;
    }
    *n = (Py_ssize_t)x->dims[x->rank - 1];
    *nrows = 1;
    for (int64_t d = 0; d + 1 < x->rank; d++)
        *nrows *= (Py_ssize_t)x->dims[d];
    return (const float *)x->data;
}

/* Runs `job` over its rows, then `finish(job, context)` (per-row results,
 * which may round to subnormal numbers), with subnormal numbers kept.
 * XLA's CPU threads flush them to zero (MXCSR's FTZ and DAZ bits), which
 * would round a dominant entry's log-probability, -log1p(t) with t below
 * float32's normal range, or a confident prediction's loss, to 0. Cleared
 * for the call (threads started here inherit the calling one's). */
static void xla_run(Job *job, void (*finish)(const Job *, void *), void *context)
{
#if LSE_X86
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr & ~0x8040u);
#endif
    Py_ssize_t size = (job->r1 - job->r0) * job->n;
    run_split(job, size >= xla_parallel ? xla_threads : 1, 0);
    if (finish)
        finish(job, context);
#if LSE_X86
    _mm_setcsr(csr);
#endif
}

/* A job over `nrows` rows of `n` entries of `x`, with `stats` holding room
 * for m, t and, where `sums`, each row's total. */
static Job xla_job(const float *x, float *out, double *stats, Py_ssize_t nrows,
                   Py_ssize_t n, int kind, int sums)
{
    return new_job(x, out, stats, stats + nrows, sums ? stats + 2 * nrows : NULL, nrows,
                   n, kind);
}

/* The F64 scalar attribute `name` of the call, or `fallback`. */
static double xla_scalar(const XlaFrame *frame, const char *name, double fallback)
{
    typedef struct {
        const char *ptr;
        size_t len;
    } Span;
    typedef struct {
        int dtype;
        void *value;
    } Scalar;
    size_t len = strlen(name);
    for (int64_t i = 0; i < frame->attrs.size; i++) {
        const Span *key = (const Span *)frame->attrs.names[i];
        const Scalar *v = (const Scalar *)frame->attrs.attrs[i];
        if (frame->attrs.types[i] == XLA_SCALAR && key->len == len &&
            memcmp(key->ptr, name, len) == 0 && v->dtype == XLA_F64)
            return *(const double *)v->value;
    }
    return fallback;
}

/* The normalisation `kind` of the float32 rows of the last axis of the one
 * argument, into the results: the rows, and each row's maximum (float32,
 * whose NaN or infinity tells the rows the standard-only path would have
 * given, as row_special writes them). Nothing in float64, which JAX
 * offers only in its x64 mode. With the attribute `zeroed` 1, those rows
 * are 0 instead: the shares of a derivative, which a training step reads
 * where XLA would otherwise mask a copy of the rows, a pass over memory. */
static XlaError *xla_rows(XlaFrame *frame, int kind)
{
    if (xla_metadata(frame))
        return NULL;
    XlaError *error;
    Py_ssize_t nrows, n;
    const float *x = xla_input(frame, 1, &nrows, &n, &error);
    if (!x)
        return error;
    float *out = xla_buffer(&frame->rets, 0, XLA_F32, nrows * n);
    float *maxima = xla_buffer(&frame->rets, 1, XLA_F32, nrows);
    if (frame->rets.size != 2 || !out || !maxima)
        return xla_error(frame, "lsekit rows: results are not the rows and their maxima");
    if (n == 0 || nrows == 0)
        return NULL;
    double *stats = PyMem_RawMalloc(2 * (size_t)nrows * sizeof(double));
    if (!stats)
        return xla_error(frame, "lsekit rows: out of memory");
    int zeroed = xla_scalar(frame, "zeroed", 0.0) != 0.0;
    Job job = xla_job(x, out, stats, nrows, n, kind, 0);
    xla_run(&job, NULL, NULL);
    for (Py_ssize_t r = 0; r < nrows; r++) {
        maxima[r] = (float)stats[r];
        if (zeroed && !isfinite(stats[r]))
            memset(out + r * n, 0, (size_t)n * sizeof(float));
    }
    PyMem_RawFree(stats);
    return NULL;
}

static XlaError *xla_log_softmax(XlaFrame *frame) { return xla_rows(frame, LOG_SOFTMAX); }
static XlaError *xla_softmax(XlaFrame *frame) { return xla_rows(frame, SOFTMAX); }

/* The per-row results of the reductions: the value, the log-sum-exp in
 * two parts (its float32 rounding and the rest, rounded: float64's digits
 * with float32 alone, for a gradient in x64 mode), and whether each row
 * holds, 1 or 0. */
typedef struct {
    float *out, *lse, *lo, *ok;
    const void *target;
    int wide;
    double smoothing;
} Reduced;

/* The log-sum-exp v of row r in its two parts. */
static void split_lse(const Reduced *red, Py_ssize_t r, double v)
{
    float hi = (float)v;
    red->lse[r] = hi;
    red->lo[r] = isfinite(hi) ? (float)(v - (double)hi) : 0.0f;
}

/* Each row's m + log1p(t), rounded once to float32. The terms' relative
 * error, 2**-33 and the sum's n 2**-53 (2**-10 + n 2**-30 float32 ulps),
 * carries into log1p(t) as that times t / (1 + t), absolutely: within half
 * an ulp of the result where |m + log1p(t)| >= 2 (2**-10 + n 2**-30) t /
 * (1 + t), which fails only where m and log1p(t) nearly cancel. Rows that
 * fail it, and rows whose maximum is not finite, are not done. */
static void finish_logsumexp(const Job *job, void *context)
{
    const Reduced *red = (const Reduced *)context;
    double k = 2.0 * (0x1p-10 + (double)job->n * 0x1p-30);
    for (Py_ssize_t r = job->r0; r < job->r1; r++) {
        double m = job->m[r], t = job->t[r], v = m + log1p(t);
        split_lse(red, r, v);
        red->ok[r] = isfinite(m) && fabs(v) * (1.0 + t) >= k * t;
    }
}

/* Each row's loss (row_loss), rounded to float32, and its log-sum-exp,
 * for the gradient, which is done wherever the maximum is finite. */
static void finish_cross_entropy(const Job *job, void *context)
{
    const Reduced *red = (const Reduced *)context;
    for (Py_ssize_t r = job->r0; r < job->r1; r++) {
        double low = log1p(job->t[r]), loss;
        int64_t c = red->wide ? ((const int64_t *)red->target)[r]
                              : ((const int32_t *)red->target)[r];
        split_lse(red, r, job->m[r] + low);
        red->ok[r] = (float)row_loss(job, r, c, red->smoothing, low, &loss);
        red->out[r] = (float)loss;
    }
}

/* logsumexp (`loss` 0) or the class-index cross-entropy of the float32 rows
 * of argument 0 (with argument 1 their classes, int32 or int64, and the
 * attribute `smoothing`), into float32 results of one value per row: the
 * loss (for the cross-entropy), the log-sum-exp in two parts, and 1 where
 * the row is done, 0 where the caller must compute it otherwise. */
static XlaError *xla_reduced(XlaFrame *frame, int loss)
{
    if (xla_metadata(frame))
        return NULL;
    XlaError *error;
    Py_ssize_t nrows, n;
    const float *x = xla_input(frame, loss ? 2 : 1, &nrows, &n, &error);
    if (!x)
        return error;
    Reduced red = {NULL, NULL, NULL, NULL, NULL, 0, 0.0};
    if (loss) {
        red.target = xla_buffer(&frame->args, 1, XLA_S64, nrows);
        red.wide = red.target != NULL;
        if (!red.target)
            red.target = xla_buffer(&frame->args, 1, XLA_S32, nrows);
        if (!red.target)
            return xla_error(frame, "lsekit rows: targets are not int32 or int64, "
                                    "one per row");
        red.smoothing = xla_scalar(frame, "smoothing", 0.0);
    }
    int results = loss ? 4 : 3;
    red.out = xla_buffer(&frame->rets, 0, XLA_F32, nrows);
    red.lse = xla_buffer(&frame->rets, results - 3, XLA_F32, nrows);
    red.lo = xla_buffer(&frame->rets, results - 2, XLA_F32, nrows);
    red.ok = xla_buffer(&frame->rets, results - 1, XLA_F32, nrows);
    if (frame->rets.size != results || !red.out || !red.lse || !red.lo || !red.ok)
        return xla_error(frame, "lsekit rows: results are not float32, one per row");
    if (n == 0 || nrows == 0)
        return NULL;
    int sums = red.smoothing != 0.0;
    double *stats = PyMem_RawMalloc((2 + sums) * (size_t)nrows * sizeof(double));
    if (!stats)
        return xla_error(frame, "lsekit rows: out of memory");
    Job job = xla_job(x, NULL, stats, nrows, n, SPLIT, sums);
    xla_run(&job, loss ? finish_cross_entropy : finish_logsumexp, &red);
    PyMem_RawFree(stats);
    return NULL;
}

static XlaError *xla_logsumexp(XlaFrame *frame) { return xla_reduced(frame, 0); }
static XlaError *xla_cross_entropy(XlaFrame *frame) { return xla_reduced(frame, 1); }

static PyObject *xla(PyObject *self, PyObject *args)
{
    int threads;
    Py_ssize_t parallel;
    (void)self;
    if (!PyArg_ParseTuple(args, "in", &threads, &parallel))
        return NULL;
    xla_threads = threads < 1 ? 1 : threads;
    xla_parallel = parallel;
    void *handlers[4] = {(void *)xla_log_softmax, (void *)xla_softmax,
                         (void *)xla_logsumexp, (void *)xla_cross_entropy};
    const char *names[4] = {"log_softmax", "softmax", "logsumexp", "cross_entropy"};
    PyObject *out = PyDict_New();
    for (int i = 0; out && i < 4; i++) {
        PyObject *capsule = PyCapsule_New(handlers[i], NULL, NULL);
        if (!capsule || PyDict_SetItemString(out, names[i], capsule) < 0)
            Py_CLEAR(out);
        Py_XDECREF(capsule);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"rows", rows, METH_VARARGS,
     "rows(x, out, m, t, total, n, kind, threads, shared): the fused row "
     "kernel over the C-contiguous float32 rows of n entries in the buffer "
     "x, into the buffers out (float32, None for kind 0), m, t and total "
     "(float64, one per row; total may be None), on the OpenMP team set by "
     "pool() where shared; as many rows as m has entries. x and out may be "
     "addresses (ints) instead, of memory the caller holds. Returns the "
     "number of rows whose maximum is not finite, which are not done. "
     "Kind 3 reads m and t, writes exp(x - m) t into out, and returns 0."},
    {"loss", loss, METH_VARARGS,
     "loss(x, target, loss, m, low, ok, total, n, ignore, smoothing, threads, "
     "shared): the class-index cross-entropy of the float32 rows of n "
     "entries in x (a buffer, or an address), as many as loss has entries, "
     "of the int64 classes target, smoothed by smoothing, 0 "
     "where the class is ignore (None: none), into the float64 buffers "
     "loss, m and low = log1p(t) and the bytes ok (1: done); total, float64 "
     "per row, is scratch for smoothing (None without it). Returns the "
     "number of rows not done."},
    {"vector", vector, METH_VARARGS,
     "vector(level): the vector path from now on, at most `level` and what "
     "the CPU has (0 none: every row takes the scalar path; 1 AVX2 and FMA; "
     "2 AVX-512 too); returns the one in use."},
    {"xla", xla, METH_VARARGS,
     "xla(threads, parallel): XLA FFI handlers of log_softmax, softmax, "
     "logsumexp and cross_entropy, a dict of capsules by name, whose results "
     "are float32: the rows and their maxima (with the attribute zeroed "
     "1.0, the rows whose maximum is not finite 0); or per row the loss (of "
     "cross_entropy), the log-sum-exp in two parts, and 1 where the row is "
     "done; calls of at least `parallel` entries "
     "take `threads` threads."},
    {"pool", pool, METH_VARARGS,
     "pool(GOMP_parallel, omp_get_thread_num, omp_get_num_threads): the "
     "addresses of an OpenMP runtime's functions, for rows(shared=True)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
