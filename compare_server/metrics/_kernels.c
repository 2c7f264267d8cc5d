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
    for (int i = 0; i < m; i++) { /* insertion sort, descending: the top-k part arrives sorted */
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

static double pearson(const double *x, const double *y, int m) {
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < m; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= m;
    my /= m;
    for (int i = 0; i < m; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
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
 * top1_match, topk_overlap, prob_cos, kl, js, mae, spearman, rel_err. Scratch holds 14k doubles
 * and 4k ints. */
static void position(const long long *ida, const float *la, const long long *idb, const float *lb, int k,
                     double *out, double *scratch, int *iscratch) {
    double *ta = scratch, *tb = ta + k, *pa = tb + k, *pb = pa + 2 * k, *lpa = pb + 2 * k, *lpb = lpa + 2 * k;
    double *rka = lpb + 2 * k, *rkb = rka + 2 * k;
    int *match = iscratch, *b_in_a = match + k, *order = b_in_a + k;
    int bad = 0, missing_a = 0, missing_b = 0;
    for (int i = 0; i < k; i++) {
        if (isnan(la[i]) || isnan(lb[i]) || la[i] == INFINITY || lb[i] == INFINITY)
            bad = 1;
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
        if (match[i] >= 0)
            b_in_a[match[i]] = 1;
        else
            missing_b++;
    }
    for (int j = 0; j < k; j++)
        missing_a += !b_in_a[j];
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
    ranks(pa, m, rka, order);
    ranks(pb, m, rkb, order);
    out[0] = ida[0] == idb[0];
    out[1] = (double)(k - missing_a) / k;
    out[2] = dot / sqrt(aa * bb);
    out[3] = kl;
    out[4] = js;
    out[5] = ae / (m + 1);
    out[6] = pearson(rka, rkb, m);
    out[7] = rel_n ? rel / rel_n : NAN;
    if (bad)
        for (int i = 2; i < 8; i++)
            out[i] = NAN;
}

/* position_rows(ids_a, lp_a, ids_b, lp_b, out): ids int64 [P, K], logprobs float32 [P, K] sorted
 * most likely first (as records carry them), all C-contiguous; out float64 [P, 8]. */
static PyObject *position_rows(PyObject *self, PyObject *args) {
    PyObject *objs[5];
    Py_buffer v[5];
    static const char *names[5] = {"ids_a", "lp_a", "ids_b", "lp_b", "out"};
    static const char *formats[5] = {"q", "f", "q", "f", "d"};
    if (!PyArg_ParseTuple(args, "OOOOO", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4]))
        return NULL;
    int got = 0;
    for (; got < 5; got++) {
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (got == 4 ? PyBUF_WRITABLE : 0);
        const char *format = formats[got];
        if (PyObject_GetBuffer(objs[got], &v[got], flags) < 0)
            goto fail;
        /* numpy writes int64 as 'l' on LP64 platforms, 'q' elsewhere */
        const char *f = v[got].format;
        int ok = v[got].ndim == 2 && (strcmp(f, format) == 0 || (format[0] == 'q' && strcmp(f, "l") == 0 && v[got].itemsize == 8));
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s: expected a 2-D '%s' array, got %d-D '%s'", names[got], format,
                         v[got].ndim, f);
            got++;
            goto fail;
        }
    }
    Py_ssize_t p = v[0].shape[0], k = v[0].shape[1];
    for (int i = 1; i < 4; i++)
        if (v[i].shape[0] != p || v[i].shape[1] != k) {
            PyErr_SetString(PyExc_ValueError, "position_rows: shapes differ");
            goto fail;
        }
    if (v[4].shape[0] != p || v[4].shape[1] != 8 || k < 1 || k > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "position_rows: out must be [P, 8] and K at least 1");
        goto fail;
    }
    double *scratch = PyMem_RawMalloc(sizeof(double) * 14 * k);
    int *iscratch = PyMem_RawMalloc(sizeof(int) * 4 * k);
    if (!scratch || !iscratch) {
        PyMem_RawFree(scratch);
        PyMem_RawFree(iscratch);
        PyErr_NoMemory();
        goto fail;
    }
    const long long *ida = v[0].buf, *idb = v[2].buf;
    const float *la = v[1].buf, *lb = v[3].buf;
    double *out = v[4].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < p; r++)
        position(ida + r * k, la + r * k, idb + r * k, lb + r * k, (int)k, out + r * 8, scratch, iscratch);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyMem_RawFree(iscratch);
    for (int i = 0; i < 5; i++)
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
