/* A small transformer engine in C (float32), checked against the golden vectors.
 *
 *   cc -O2 -std=c99 -o engine engine.c -lm
 *   python -m conformance golden export golden/
 *   ./engine golden/ out/
 *   python -m conformance golden check golden/ --outputs out/ \
 *       --require softmax,positional_encoding,embedding,layer_norm,feed_forward
 *
 * It reads golden/cases.txt ("<case> <op>" per line), and for the ops it implements reads the
 * case's inputs (golden/<case>.in.<argument>.npy; scalars are 0-d arrays, an absent file is
 * None) and writes out/<case>.npy in float32. The other ops are reported as not implemented
 * (no output file), which the check reports the same way. No JSON parser, no zip reader.
 *
 * Compiled-in bugs, to see the check fail (tests/test_c_example.py):
 *   -DBUG_SOFTMAX_NO_MAX      softmax without the max subtraction (exp overflows)
 *   -DBUG_EPS_OUTSIDE_SQRT    layer norm divides by sqrt(var) + eps
 *
 * The eps rule: eps is stored as float64; this engine rounds it to float32, as a float32
 * engine does (either way is within the tolerance, GOLDEN.md "The eps rule").
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_npy.h"

#define MAX_PATH 4096

static const char *golden_dir, *out_dir;
static char err[MAX_PATH + 256];

/* Input <argument> of <case>; returns 0, or NPY_MISSING for an absent (None) argument. */
static int input(const char *name, const char *argument, npy_array *a) {
    char path[MAX_PATH];
    snprintf(path, sizeof path, "%s/%s.in.%s.npy", golden_dir, name, argument);
    int rc = npy_read(path, a, err, sizeof err);
    if (rc == NPY_ERROR) {
        fprintf(stderr, "engine: %s\n", err);
        exit(2);
    }
    return rc;
}

static npy_array required(const char *name, const char *argument) {
    npy_array a;
    if (input(name, argument, &a) == NPY_MISSING) {
        fprintf(stderr, "engine: %s: no input %s\n", name, argument);
        exit(2);
    }
    return a;
}

static float *floats(const npy_array *a) {
    float *x = malloc(sizeof(float) * (size_t)(a->size ? a->size : 1));
    for (long i = 0; i < a->size; i++) x[i] = (float)npy_get(a, i);
    return x;
}

static void write_output(const char *name, const float *y, int ndim, const long *shape) {
    char path[MAX_PATH];
    snprintf(path, sizeof path, "%s/%s.npy", out_dir, name);
    if (npy_write_f32(path, y, ndim, shape) != 0) {
        fprintf(stderr, "engine: cannot write %s\n", path);
        exit(2);
    }
}

/* softmax(x, axis): exp(x - max) / sum exp(x - max) along axis; an all -inf row gives zeros. */
static void softmax(const char *name) {
    npy_array xa = required(name, "x"), axis_a = required(name, "axis");
    int axis = (int)npy_get(&axis_a, 0);
    if (axis < 0) axis += xa.ndim;
    long n = xa.shape[axis], inner = 1;
    for (int d = axis + 1; d < xa.ndim; d++) inner *= xa.shape[d];
    long outer = xa.size / (n * inner);
    float *x = floats(&xa), *y = malloc(sizeof(float) * (size_t)xa.size);
    for (long o = 0; o < outer; o++) {
        for (long i = 0; i < inner; i++) {
            float *row = x + o * n * inner + i, *out = y + o * n * inner + i;
            float m = -INFINITY, sum = 0.0f;
            for (long j = 0; j < n; j++) m = fmaxf(m, row[j * inner]);
#ifdef BUG_SOFTMAX_NO_MAX
            m = 0.0f;
#else
            if (m == -INFINITY) m = 0.0f;  /* every entry -inf: exp gives 0 everywhere */
#endif
            for (long j = 0; j < n; j++) sum += out[j * inner] = expf(row[j * inner] - m);
            for (long j = 0; j < n; j++) out[j * inner] = sum > 0.0f ? out[j * inner] / sum : 0.0f;
        }
    }
    write_output(name, y, xa.ndim, xa.shape);
    free(x); free(y); npy_free(&xa); npy_free(&axis_a);
}

/* PE[pos, 2i] = sin(pos / 10000^(2i / d_model)), PE[pos, 2i + 1] = cos(...). */
static void positional_encoding(const char *name) {
    npy_array s = required(name, "seq_len"), d = required(name, "d_model");
    long seq_len = (long)npy_get(&s, 0), d_model = (long)npy_get(&d, 0), shape[2] = {seq_len, d_model};
    float *y = malloc(sizeof(float) * (size_t)(seq_len * d_model));
    for (long pos = 0; pos < seq_len; pos++) {
        for (long j = 0; j < d_model; j += 2) {
            double angle = (double)pos / pow(10000.0, (double)j / (double)d_model);  /* exact positions */
            y[pos * d_model + j] = (float)sin(angle);
            y[pos * d_model + j + 1] = (float)cos(angle);
        }
    }
    write_output(name, y, 2, shape);
    free(y); npy_free(&s); npy_free(&d);
}

/* embedding(ids, table): table[ids]. */
static void embedding(const char *name) {
    npy_array ids = required(name, "ids"), table = required(name, "table");
    long d = table.shape[1], shape[NPY_MAX_DIMS];
    float *t = floats(&table), *y = malloc(sizeof(float) * (size_t)(ids.size * d));
    for (long i = 0; i < ids.size; i++) memcpy(y + i * d, t + (long)npy_get(&ids, i) * d, sizeof(float) * (size_t)d);
    memcpy(shape, ids.shape, sizeof(long) * (size_t)ids.ndim);
    shape[ids.ndim] = d;
    write_output(name, y, ids.ndim + 1, shape);
    free(t); free(y); npy_free(&ids); npy_free(&table);
}

/* LN(x) = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (two-pass, biased var). */
static void layer_norm(const char *name) {
    npy_array xa = required(name, "x"), ga = required(name, "gamma"), ba = required(name, "beta");
    npy_array ea = required(name, "eps");
    long d = ga.size, rows = xa.size / d;
    float eps = (float)npy_get(&ea, 0), *x = floats(&xa), *g = floats(&ga), *b = floats(&ba);
    float *y = malloc(sizeof(float) * (size_t)xa.size);
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * d;
        float mean = 0.0f, var = 0.0f;
        for (long j = 0; j < d; j++) mean += row[j];
        mean /= (float)d;
        for (long j = 0; j < d; j++) var += (row[j] - mean) * (row[j] - mean);
        var /= (float)d;
#ifdef BUG_EPS_OUTSIDE_SQRT
        float scale = 1.0f / (sqrtf(var) + eps);
#else
        float scale = 1.0f / sqrtf(var + eps);
#endif
        for (long j = 0; j < d; j++) y[r * d + j] = (row[j] - mean) * scale * g[j] + b[j];
    }
    write_output(name, y, xa.ndim, xa.shape);
    free(x); free(g); free(b); free(y); npy_free(&xa); npy_free(&ga); npy_free(&ba); npy_free(&ea);
}

/* y = x W + b for x (rows, n), W (n, m). */
static float *linear(const float *x, long rows, long n, const npy_array *wa, const npy_array *ba) {
    long m = wa->shape[1];
    float *w = floats(wa), *b = floats(ba), *y = malloc(sizeof(float) * (size_t)(rows * m));
    for (long r = 0; r < rows; r++) {
        for (long k = 0; k < m; k++) {
            float acc = b[k];
            for (long j = 0; j < n; j++) acc += x[r * n + j] * w[j * m + k];
            y[r * m + k] = acc;
        }
    }
    free(w); free(b);
    return y;
}

/* FFN(x) = act(x W_1 + b_1) W_2 + b_2; act relu or the exact-erf GELU. */
static void feed_forward(const char *name) {
    npy_array xa = required(name, "x"), act = required(name, "activation");
    npy_array w1 = required(name, "p.w_1"), b1 = required(name, "p.b_1");
    npy_array w2 = required(name, "p.w_2"), b2 = required(name, "p.b_2");
    char activation[16];
    npy_string(&act, activation, sizeof activation);
    long d_model = xa.shape[xa.ndim - 1], rows = xa.size / d_model, d_ff = w1.shape[1];
    float *x = floats(&xa), *h = linear(x, rows, d_model, &w1, &b1);
    for (long i = 0; i < rows * d_ff; i++)
        h[i] = strcmp(activation, "gelu") == 0 ? 0.5f * h[i] * (1.0f + erff(h[i] / sqrtf(2.0f))) : fmaxf(h[i], 0.0f);
    float *y = linear(h, rows, d_ff, &w2, &b2);
    write_output(name, y, xa.ndim, xa.shape);
    free(x); free(h); free(y);
    npy_free(&xa); npy_free(&act); npy_free(&w1); npy_free(&b1); npy_free(&w2); npy_free(&b2);
}

static const struct { const char *op; void (*run)(const char *name); } OPS[] = {
    {"softmax", softmax}, {"positional_encoding", positional_encoding}, {"embedding", embedding},
    {"layer_norm", layer_norm}, {"feed_forward", feed_forward},
};

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s GOLDEN_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    golden_dir = argv[1];
    out_dir = argv[2];
    char path[MAX_PATH], name[256], op[64];
    snprintf(path, sizeof path, "%s/cases.txt", golden_dir);
    FILE *cases = fopen(path, "r");
    if (!cases) {
        fprintf(stderr, "engine: %s: cannot open (a golden directory of layout npy?)\n", path);
        return 2;
    }
    int written = 0, skipped = 0;
    while (fscanf(cases, "%255s %63s", name, op) == 2) {
        size_t k = 0;
        while (k < sizeof OPS / sizeof OPS[0] && strcmp(OPS[k].op, op) != 0) k++;
        if (k == sizeof OPS / sizeof OPS[0]) {
            printf("%s: not implemented (%s)\n", name, op);
            skipped++;
            continue;
        }
        OPS[k].run(name);
        written++;
    }
    fclose(cases);
    printf("engine: wrote %d outputs, %d cases not implemented\n", written, skipped);
    return 0;
}
