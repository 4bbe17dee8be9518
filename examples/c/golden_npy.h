/* golden_npy.h: read and write the .npy files of the golden vectors (conformance/golden/GOLDEN.md,
 * layout npy) in C99, with no library beyond libc. One header, static functions: include it.
 *
 *   npy_array a;
 *   char err[256];
 *   int rc = npy_read("golden/softmax-0.in.x.npy", &a, err, sizeof err);
 *   // rc 0: read; NPY_MISSING: no such file (an absent argument is None); NPY_ERROR: err says why
 *   double v = npy_get(&a, i);             // element i (C order) as a double, whatever the dtype
 *   npy_free(&a);
 *   npy_write_f32("out/softmax-0.npy", data, ndim, shape);
 *
 * What it reads: .npy versions 1.0, 2.0 and 3.0; C order; the dtypes of the golden files:
 * '<f8' (float64), '<i8' (int64), '|b1' (bool), '|S<n>' (ASCII string, no terminator in the
 * file), and '<f4', '<f2' is refused. Every golden file is little-endian; this reader runs on a
 * little-endian host (x86, ARM) and says so otherwise.
 */
#ifndef GOLDEN_NPY_H
#define GOLDEN_NPY_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MISSING 1
#define NPY_ERROR (-1)
#define NPY_MAX_DIMS 8

typedef struct {
    char kind;                 /* 'f' float, 'i' int, 'b' bool, 'S' bytes */
    int itemsize;              /* bytes per element */
    int ndim;                  /* 0 for a scalar */
    long shape[NPY_MAX_DIMS];
    long size;                 /* number of elements (1 for a scalar) */
    unsigned char *data;       /* size * itemsize bytes, little-endian, C order */
} npy_array;

static int npy_fail(char *err, size_t n, const char *path, const char *what) {
    snprintf(err, n, "%s: %s", path, what);
    return NPY_ERROR;
}

static int npy_little_endian_host(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* The value of key 'name' in the header dict, e.g. "'<f8'" or "(2, 5)". */
static const char *npy_field(const char *header, const char *name) {
    const char *p = strstr(header, name);
    if (!p) return NULL;
    p = strchr(p + strlen(name), ':');
    if (!p) return NULL;
    for (p++; *p == ' '; p++) {}
    return p;
}

static int npy_parse_header(const char *header, npy_array *a, const char *path, char *err, size_t n) {
    const char *descr = npy_field(header, "'descr'");
    const char *order = npy_field(header, "'fortran_order'");
    const char *shape = npy_field(header, "'shape'");
    if (!descr || !order || !shape || descr[0] != '\'') return npy_fail(err, n, path, "malformed .npy header");
    if (strncmp(order, "False", 5) != 0) return npy_fail(err, n, path, "Fortran order: write C order");
    char byteorder = descr[1];
    a->kind = descr[2];
    a->itemsize = atoi(descr + 3);
    if (byteorder == '>') return npy_fail(err, n, path, "big-endian data: the golden files are little-endian");
    if (!((a->kind == 'f' && (a->itemsize == 8 || a->itemsize == 4)) || (a->kind == 'i' && a->itemsize == 8)
          || (a->kind == 'b' && a->itemsize == 1) || (a->kind == 'S' && a->itemsize > 0)))
        return npy_fail(err, n, path, "unsupported dtype (expected <f8, <f4, <i8, |b1 or |S<n>)");
    if (shape[0] != '(') return npy_fail(err, n, path, "malformed shape");
    a->ndim = 0;
    a->size = 1;
    const char *p = shape + 1;
    while (*p && *p != ')') {
        char *end;
        long d = strtol(p, &end, 10);
        if (end == p) break;
        if (a->ndim == NPY_MAX_DIMS) return npy_fail(err, n, path, "too many dimensions");
        a->shape[a->ndim++] = d;
        a->size *= d;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    return 0;
}

/* Read one .npy file. 0: read; NPY_MISSING: the file does not exist; NPY_ERROR: see err. */
static int npy_read(const char *path, npy_array *a, char *err, size_t n) {
    memset(a, 0, sizeof *a);
    if (!npy_little_endian_host()) return npy_fail(err, n, path, "this reader needs a little-endian host");
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return NPY_MISSING;
        return npy_fail(err, n, path, strerror(errno));
    }
    unsigned char magic[8];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        fclose(f);
        return npy_fail(err, n, path, "not an .npy file (no \\x93NUMPY magic)");
    }
    unsigned char len[4] = {0, 0, 0, 0};
    size_t len_bytes = magic[6] == 1 ? 2 : 4;  /* version 1.0: 2 bytes; 2.0 and 3.0: 4 */
    if (fread(len, 1, len_bytes, f) != len_bytes) {
        fclose(f);
        return npy_fail(err, n, path, "truncated header");
    }
    size_t header_len = len[0] | (len[1] << 8) | ((size_t)len[2] << 16) | ((size_t)len[3] << 24);
    char *header = malloc(header_len + 1);
    if (!header || fread(header, 1, header_len, f) != header_len) {
        free(header);
        fclose(f);
        return npy_fail(err, n, path, "truncated header");
    }
    header[header_len] = '\0';
    int rc = npy_parse_header(header, a, path, err, n);
    free(header);
    if (rc == 0) {
        size_t bytes = (size_t)a->size * (size_t)a->itemsize;
        a->data = malloc(bytes ? bytes : 1);
        if (!a->data || fread(a->data, 1, bytes, f) != bytes) rc = npy_fail(err, n, path, "truncated data");
    }
    fclose(f);
    if (rc != 0) {
        free(a->data);
        a->data = NULL;
    }
    return rc;
}

/* Element i (C order) as a double: float64, float32, int64 or bool (0 / 1). */
static double npy_get(const npy_array *a, long i) {
    const unsigned char *p = a->data + (size_t)i * (size_t)a->itemsize;
    if (a->kind == 'f' && a->itemsize == 8) { double v; memcpy(&v, p, 8); return v; }
    if (a->kind == 'f') { float v; memcpy(&v, p, 4); return v; }
    if (a->kind == 'i') { int64_t v; memcpy(&v, p, 8); return (double)v; }
    return p[0] ? 1.0 : 0.0;
}

/* A '|S<n>' scalar as a NUL-terminated string in buf (truncated to n - 1 bytes). */
static const char *npy_string(const npy_array *a, char *buf, size_t n) {
    size_t len = (size_t)a->itemsize < n - 1 ? (size_t)a->itemsize : n - 1;
    memcpy(buf, a->data, len);
    buf[len] = '\0';
    return buf;
}

static void npy_free(npy_array *a) {
    free(a->data);
    a->data = NULL;
}

/* Write a float32 array as .npy version 1.0 ('<f4', C order). 0 on success. */
static int npy_write_f32(const char *path, const float *data, int ndim, const long *shape) {
    char header[256];
    int used = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    long size = 1;
    for (int d = 0; d < ndim; d++) {
        used += snprintf(header + used, sizeof header - used, "%ld%s", shape[d], ndim == 1 ? "," : d + 1 < ndim ? ", " : "");
        size *= shape[d];
    }
    used += snprintf(header + used, sizeof header - used, "), }");
    int total = 10 + used + 1;                      /* magic + version + length, header, '\n' */
    int pad = (64 - total % 64) % 64;               /* the data starts on a 64-byte boundary */
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned short header_len = (unsigned short)(used + pad + 1);
    unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                  (unsigned char)(header_len & 0xff), (unsigned char)(header_len >> 8)};
    fwrite(preamble, 1, 10, f);
    fwrite(header, 1, (size_t)used, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    size_t written = fwrite(data, sizeof(float), (size_t)size, f);
    return fclose(f) == 0 && written == (size_t)size ? 0 : -1;
}

#endif /* GOLDEN_NPY_H */
