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
#include <string.h>

#define EPS 1e-12 /* logprobs.EPS: the floor for probabilities in logs */

static int get_view(PyObject *obj, Py_buffer *view, int flags, const char *format, int ndim, const char *what) {
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->ndim != ndim || strcmp(view->format, format) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected %d-D '%s' array, got %d-D '%s'", what, ndim, format, view->ndim,
                     view->format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* embed_rows(a, b, cos, mse, max_abs): per row of two [n, d] float32 arrays (rows contiguous), with
 * â = a/‖a‖: cos = â·b̂, mse = mean((â-b̂)²), max_abs = max|â-b̂|, into float64 [n] outputs.
 * Sums in double, as embeddings.normalise does; a NaN, an infinity or a zero row gives NaN. */
static PyObject *embed_rows(PyObject *self, PyObject *args) {
    PyObject *objs[5];
    Py_buffer v[5];
    static const char *names[5] = {"a", "b", "cos", "mse", "max_abs"};
    if (!PyArg_ParseTuple(args, "OOOOO", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4]))
        return NULL;
    int got = 0;
    for (; got < 5; got++) {
        int out = got >= 2;
        int flags = out ? (PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) : (PyBUF_RECORDS_RO);
        if (get_view(objs[got], &v[got], flags, out ? "d" : "f", out ? 1 : 2, names[got]) < 0)
            goto fail;
    }
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
    for (int k = 0; k < 5; k++)
        PyBuffer_Release(&v[k]);
    Py_RETURN_NONE;
fail:
    for (int k = 0; k < got; k++)
        PyBuffer_Release(&v[k]);
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
static void sorted_ranks(const double *x, int m, double *r) {
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

/* Pearson r of two rank vectors: ties averaged keep their sum m(m+1)/2, so both means are (m+1)/2. */
static double rank_pearson(const double *x, const double *y, int m) {
    double mean = (m + 1) / 2.0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < m; i++) {
        double dx = x[i] - mean, dy = y[i] - mean;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    double denom = sqrt(sxx * syy);
    return denom > 0 ? sxy / denom : NAN;
}

static double fill(const double *top, int k, int missing) {
    double sum = 0;
    for (int i = 0; i < k; i++)
        sum += top[i];
    double leftover = 1.0 - sum > 0 ? 1.0 - sum : 0.0;
    double share = leftover / (missing > 1 ? missing : 1);
    return top[k - 1] < share ? top[k - 1] : share;
}

/* One position: logprobs.position_metrics for a single row. out[8] follows POSITION_METRICS:
 * top1_match, topk_overlap, prob_cos, kl, js, mae, spearman, rel_err. Scratch holds 18k doubles
 * and 4k ints. */
static void position(const long long *ida, const float *la, const long long *idb, const float *lb, int k,
                     double *out, double *scratch, int *iscratch) {
    double *ta = scratch, *tb = ta + k, *pa = tb + k, *pb = pa + 2 * k, *lpa = pb + 2 * k, *lpb = lpa + 2 * k;
    double *rka = lpb + 2 * k, *rkb = rka + 2 * k, *seq = rkb + 2 * k, *seq_rank = seq + 2 * k;
    int *match = iscratch, *b_in_a = match + k, *order = b_in_a + k;
    int bad = 0, descending = 1, distinct = 1, missing_a = 0, missing_b = 0;
    for (int i = 0; i < k; i++) {
        if (isnan(la[i]) || isnan(lb[i]) || la[i] == INFINITY || lb[i] == INFINITY)
            bad = 1;
        if (i && (la[i] > la[i - 1] || lb[i] > lb[i - 1]))
            descending = 0;
        ta[i] = exp(la[i]);
        tb[i] = exp(lb[i]);
        b_in_a[i] = 0;
    }
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
        } else
            missing_b++;
    }
    for (int j = 0; j < k; j++)
        if (!b_in_a[j]) { /* unmatched, unless Sb lists an id of Sa twice (bad input, as numpy reads it) */
            for (int i = 0; i < k; i++)
                if (idb[j] == ida[i]) {
                    b_in_a[j] = 1;
                    distinct = 0;
                    break;
                }
            missing_a += !b_in_a[j];
        }
    /* An id one run's top-k lacks gets min(its K-th probability, its left-over mass / missing). */
    double fa = fill(ta, k, missing_a), fb = fill(tb, k, missing_b);
    double log_fa = log(fa > EPS ? fa : EPS), log_fb = log(fb > EPS ? fb : EPS);
    /* The union: Sa's ids in Sa's order, then Sb's ids that Sa lacks. */
    int m = 0;
    for (int i = 0; i < k; i++, m++) {
        pa[m] = ta[i];
        lpa[m] = ta[i] > EPS ? la[i] : log(EPS);
        if (match[i] >= 0) {
            pb[m] = tb[match[i]];
            lpb[m] = pb[m] > EPS ? lb[match[i]] : log(EPS);
        } else {
            pb[m] = fb;
            lpb[m] = log_fb;
        }
    }
    for (int j = 0; j < k; j++)
        if (!b_in_a[j]) {
            pa[m] = fa;
            lpa[m] = log_fa;
            pb[m] = tb[j];
            lpb[m] = tb[j] > EPS ? lb[j] : log(EPS);
            m++;
        }
    double sa = 0, sb = 0;
    for (int c = 0; c < m; c++) {
        sa += pa[c];
        sb += pb[c];
    }
    double tail_a = 1.0 - sa > 0 ? 1.0 - sa : 0.0, tail_b = 1.0 - sb > 0 ? 1.0 - sb : 0.0;
    double dot = tail_a * tail_b, aa = tail_a * tail_a, bb = tail_b * tail_b, kl = 0, js = 0, ae = fabs(tail_a - tail_b);
    double rel = 0;
    int rel_n = 0;
    for (int c = 0; c <= m; c++) { /* c == m is the tail bucket */
        double p = c < m ? pa[c] : tail_a, q = c < m ? pb[c] : tail_b;
        double lp = c < m ? lpa[c] : log(p > EPS ? p : EPS), lq = c < m ? lpb[c] : log(q > EPS ? q : EPS);
        double mid = 0.5 * (p + q), lm = log(mid > EPS ? mid : EPS);
        if (c < m) {
            dot += p * q;
            aa += p * p;
            bb += q * q;
            ae += fabs(p - q);
            if (p > 0) {
                rel += fabs(p - q) / p;
                rel_n++;
            }
        }
        if (p > 0) {
            kl += p * (lp - lq);
            js += 0.5 * p * (lp - lm);
        }
        if (q > 0)
            js += 0.5 * q * (lq - lm);
    }
    if (descending && distinct) {
        /* No sort needed. pa is descending as built: Sa's probabilities, then fills no larger than
         * the K-th. pb holds Sb's probabilities plus as many fills, so its values in descending
         * order are tb[0..k-1] then fb: rank that sequence and map each column to its entry. */
        sorted_ranks(pa, m, rka);
        for (int c = 0; c < m; c++)
            seq[c] = c < k ? tb[c] : fb;
        sorted_ranks(seq, m, seq_rank);
        int c = 0;
        for (int i = 0; i < k; i++, c++)
            rkb[c] = seq_rank[match[i] >= 0 ? match[i] : k];
        for (int j = 0; j < k; j++)
            if (!b_in_a[j])
                rkb[c++] = seq_rank[j];
    } else { /* rows out of order (bad values) or an id listed twice */
        ranks(pa, m, rka, order);
        ranks(pb, m, rkb, order);
    }
    out[0] = ida[0] == idb[0];
    out[1] = (double)(k - missing_a) / k;
    out[2] = dot / sqrt(aa * bb);
    out[3] = kl;
    out[4] = js;
    out[5] = ae / (m + 1);
    out[6] = rank_pearson(rka, rkb, m);
    out[7] = rel_n ? rel / rel_n : NAN;
    if (bad)
        for (int i = 2; i < 8; i++)
            out[i] = NAN;
}

static int is_int64(const Py_buffer *v) { /* numpy writes int64 as 'l' on LP64 platforms, 'q' elsewhere */
    const char *f = v->format[0] == '<' || v->format[0] == '=' ? v->format + 1 : v->format;
    return v->itemsize == 8 && (strcmp(f, "q") == 0 || strcmp(f, "l") == 0);
}

/* position_rows(ids_a, lp_a, ids_b, lp_b, counts, out): ids int64 and logprobs float32 [n, T, K],
 * each row sorted most likely first (as records carry them), rows contiguous, any other strides
 * (strided views of record bytes); counts int64 [n]: block i's compared positions are its first
 * counts[i]; out float64 [sum(counts), 8], C-contiguous, filled block after block. */
static PyObject *position_rows(PyObject *self, PyObject *args) {
    PyObject *objs[6];
    Py_buffer v[6];
    static const char *names[6] = {"ids_a", "lp_a", "ids_b", "lp_b", "counts", "out"};
    if (!PyArg_ParseTuple(args, "OOOOOO", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5]))
        return NULL;
    int got = 0;
    for (; got < 6; got++) {
        int flags = got < 4 ? PyBUF_RECORDS_RO : PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (got == 5 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[got], &v[got], flags) < 0)
            goto fail;
        int ints = got == 0 || got == 2 || got == 4, ndim = got < 4 ? 3 : got == 4 ? 1 : 2;
        int ok = v[got].ndim == ndim && (ints ? is_int64(&v[got]) : strcmp(v[got].format, got == 5 ? "d" : "f") == 0);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s: expected a %d-D %s array, got %d-D '%s'", names[got], ndim,
                         ints ? "int64" : got == 5 ? "float64" : "float32", v[got].ndim, v[got].format);
            got++;
            goto fail;
        }
    }
    Py_ssize_t n = v[0].shape[0], t = v[0].shape[1], k = v[0].shape[2], total = 0;
    const long long *counts = v[4].buf;
    for (int i = 0; i < 4; i++)
        if (v[i].shape[0] != n || v[i].shape[1] != t || v[i].shape[2] != k || v[i].strides[2] != v[i].itemsize) {
            PyErr_SetString(PyExc_ValueError, "position_rows: inputs differ in shape or their rows are not contiguous");
            goto fail;
        }
    for (Py_ssize_t i = 0; i < n && v[4].shape[0] == n; i++) {
        if (counts[i] < 0 || counts[i] > t)
            break;
        total += counts[i];
    }
    if (v[4].shape[0] != n || v[5].shape[0] != total || v[5].shape[1] != 8 || k < 1 || k > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "position_rows: counts must be [n] within 0..T, out [sum(counts), 8], K at least 1");
        goto fail;
    }
    double *scratch = PyMem_RawMalloc(sizeof(double) * 18 * k);
    int *iscratch = PyMem_RawMalloc(sizeof(int) * 4 * k);
    if (!scratch || !iscratch) {
        PyMem_RawFree(scratch);
        PyMem_RawFree(iscratch);
        PyErr_NoMemory();
        goto fail;
    }
    double *out = v[5].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t r = 0; r < counts[i]; r++, out += 8) {
#define ROW(x, type) ((const type *)((const char *)v[x].buf + i * v[x].strides[0] + r * v[x].strides[1]))
            position(ROW(0, long long), ROW(1, float), ROW(2, long long), ROW(3, float), (int)k, out, scratch, iscratch);
#undef ROW
        }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyMem_RawFree(iscratch);
    for (int i = 0; i < 6; i++)
        PyBuffer_Release(&v[i]);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&v[i]);
    return NULL;
}

static PyMethodDef methods[] = {
    {"embed_rows", embed_rows, METH_VARARGS, "Per-row cos, mse and max_abs of two float32 embedding matrices."},
    {"position_rows", position_rows, METH_VARARGS, "The logprob position metrics of stacked top-k rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
