/*
** fuzz_reader.h: the body shared by the libFuzzer targets of the binary
** readers. Each input goes through every path a reader has, whatever its
** size: read from a per-process temporary file (a regular file: sizes
** checked against it) into the exact dtype and into the other one, and
** through a pipe (a stream: read into growing memory before allocating).
** Small accepted arrays are written back, plain and gzip, re-read and
** compared, so writer and reader must agree. Any broken invariant
** aborts, which libFuzzer reports as a crash.
*/
#ifndef FUZZ_READER_H
#define FUZZ_READER_H

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nm_io.h"

/* The core's only global (defined by nm_tensor.c, which is not linked). */
volatile sig_atomic_t nm_interrupted;

typedef int (*fuzz_open_fn)(nm_reader *r, const char *path, char *err, size_t errlen);
typedef int (*fuzz_write_fn)(const char *path, const nm_tensor *t, nm_io_type type,
                             char *err, size_t errlen);

#define FUZZ_CHECK(cond) \
  do { if (!(cond)) { fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, \
                              __FILE__, __LINE__); abort(); } } while (0)

static char fuzz_in[96], fuzz_out[96], fuzz_out_gz[96];

static void fuzz_cleanup(void) {
  remove(fuzz_in);
  remove(fuzz_out);
  remove(fuzz_out_gz);
}

static void fuzz_paths(const char *tag) {
  if (fuzz_in[0] != '\0')
    return;
  atexit(fuzz_cleanup);
  const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(fuzz_in, sizeof fuzz_in, "%s/nm_fuzz_%s_%ld.in", tmp, tag, (long)getpid());
  snprintf(fuzz_out, sizeof fuzz_out, "%s/nm_fuzz_%s_%ld.out", tmp, tag, (long)getpid());
  snprintf(fuzz_out_gz, sizeof fuzz_out_gz, "%s/nm_fuzz_%s_%ld.out.gz", tmp, tag, (long)getpid());
}

static void fuzz_write_input(const uint8_t *data, size_t size) {
  int fd = open(fuzz_in, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  FUZZ_CHECK(fd >= 0);
  size_t done = 0;
  while (done < size) {
    ssize_t k = write(fd, data + done, size - done);
    FUZZ_CHECK(k > 0);
    done += (size_t)k;
  }
  close(fd);
}

/* A failed call must leave a message that names the file. */
static void fuzz_check_message(const char *err, const char *path) {
  FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0);
  FUZZ_CHECK(strlen(err) > strlen(path) + 2);
}

static int same_values(const void *a, const void *b, int64_t n, nm_dtype dt) {
  for (int64_t i = 0; i < n; i++) {
    double x = dt == NM_FLOAT32 ? ((const float *)a)[i] : ((const double *)a)[i];
    double y = dt == NM_FLOAT32 ? ((const float *)b)[i] : ((const double *)b)[i];
    if (!(x == y || (isnan(x) && isnan(y))))
      return 0;
  }
  return 1;
}

/* Writes what was read with the file's own element type, reads it back
** and compares. Values decoded exactly (the exact dtype) must survive. */
static void fuzz_round_trip(const nm_reader *r, const void *values, nm_dtype dt,
                            fuzz_open_fn opener, fuzz_write_fn writer, int gz) {
  const char *out = gz ? fuzz_out_gz : fuzz_out;
  char err[NM_IO_ERRLEN];
  nm_tensor t;
  memset(&t, 0, sizeof t);
  t.dtype = dt;
  t.ndim = r->ndim;
  int64_t stride = 1;
  for (int d = r->ndim - 1; d >= 0; d--) {
    t.size[d] = r->dims[d];
    t.stride[d] = stride;
    stride *= r->dims[d] > 0 ? r->dims[d] : 1;
  }
  t.data = (void *)(uintptr_t)values;
  /* Every value read in its exact dtype is exact, so it can be written back
  ** (64-bit integers without a float64 are refused by the reader). */
  int status = writer(out, &t, r->type, err, sizeof err);
  if (status != NM_OK)
    fprintf(stderr, "%s\n", err);
  FUZZ_CHECK(status == NM_OK);
  nm_reader back;
  status = opener(&back, out, err, sizeof err);
  FUZZ_CHECK(status == NM_OK);
  FUZZ_CHECK(back.type == r->type && back.ndim == r->ndim && back.count == r->count);
  for (int d = 0; d < r->ndim; d++)
    FUZZ_CHECK(back.dims[d] == r->dims[d]);
  size_t bytes = (size_t)r->count * (dt == NM_FLOAT32 ? sizeof(float) : sizeof(double));
  void *again = malloc(bytes + 1);
  FUZZ_CHECK(again != NULL);
  status = nm_reader_read(&back, again, dt, err, sizeof err);
  nm_reader_close(&back);
  FUZZ_CHECK(status == NM_OK);
  FUZZ_CHECK(same_values(values, again, r->count, dt));
  free(again);
  remove(out);
}

/* One read of the input at `path`: open, load (streams), allocate, read;
** `other` picks the dtype that is not the exact one. Returns the values
** (to free) and fills *r when everything was accepted, else NULL. */
static void *fuzz_read(const char *path, size_t size, fuzz_open_fn opener, int other,
                       nm_reader *r, nm_dtype *dt_out) {
  char err[NM_IO_ERRLEN];
  int status = opener(r, path, err, sizeof err);
  if (status != NM_OK) {
    FUZZ_CHECK(r->src == NULL);
    fuzz_check_message(err, path);
    return NULL;
  }
  FUZZ_CHECK(r->ndim >= 0 && r->ndim <= NM_MAXDIM);
  int64_t count = 1, span = 1;
  for (int d = 0; d < r->ndim; d++) {
    FUZZ_CHECK(r->dims[d] >= 0);
    count *= r->dims[d];
    span *= r->dims[d] > 0 ? r->dims[d] : 1;
    FUZZ_CHECK(span <= NM_MAX_SPAN);           /* strides of empty shapes fit too */
  }
  FUZZ_CHECK(count == r->count);
  /* Streams are read before the caller allocates: what is loaded exists. */
  status = nm_reader_load(r, err, sizeof err);
  if (status != NM_OK) {
    fuzz_check_message(err, path);
    nm_reader_close(r);
    FUZZ_CHECK(r->src == NULL);
    return NULL;
  }
  /* So what the caller allocates is bounded by the input: plain files
  ** exactly, gzip by deflate's maximal ratio. */
  FUZZ_CHECK(r->count * (int64_t)nm_io_type_size(r->type) <= 1032 * (int64_t)size + 1024);
  nm_dtype exact = nm_io_exact_dtype(r->type);
  nm_dtype dt = !other ? exact : exact == NM_FLOAT32 ? NM_FLOAT64 : NM_FLOAT32;
  size_t bytes = (size_t)r->count * (dt == NM_FLOAT32 ? sizeof(float) : sizeof(double));
  void *values = malloc(bytes + 1);
  FUZZ_CHECK(values != NULL);
  status = nm_reader_read(r, values, dt, err, sizeof err);
  nm_reader_close(r);
  nm_reader_close(r);                    /* idempotent */
  if (status != NM_OK) {
    fuzz_check_message(err, path);
    free(values);
    return NULL;
  }
  *dt_out = dt;
  return values;
}

/* The input through a pipe, as /dev/fd/N (a FIFO: the stream path). The
** input fits the pipe buffer (max_len), so writing it cannot block. */
static void *fuzz_read_pipe(const uint8_t *data, size_t size, fuzz_open_fn opener,
                            nm_reader *r, nm_dtype *dt) {
  int fds[2];
  char path[64];
  FUZZ_CHECK(pipe(fds) == 0);
  size_t done = 0;
  while (done < size) {
    ssize_t k = write(fds[1], data + done, size - done);
    FUZZ_CHECK(k > 0);
    done += (size_t)k;
  }
  close(fds[1]);
  snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
  void *values = fuzz_read(path, size, opener, 0, r, dt);
  close(fds[0]);
  return values;
}

static int fuzz_one(const uint8_t *data, size_t size, const char *tag,
                    fuzz_open_fn opener, fuzz_write_fn writer) {
  nm_reader r, r2, r3;
  nm_dtype dt, dt2, dt3;
  fuzz_paths(tag);
  fuzz_write_input(data, size);
  void *values = fuzz_read(fuzz_in, size, opener, 0, &r, &dt);
  void *other = fuzz_read(fuzz_in, size, opener, 1, &r2, &dt2);
  void *piped = size <= 8192 ? fuzz_read_pipe(data, size, opener, &r3, &dt3) : NULL;
  /* One file, one verdict: accepted through the file in either dtype and
  ** through the pipe alike, with the same values. */
  FUZZ_CHECK((values != NULL) == (other != NULL));
  if (size <= 8192)
    FUZZ_CHECK((values != NULL) == (piped != NULL));
  if (values != NULL && piped != NULL) {
    FUZZ_CHECK(r3.count == r.count && dt3 == dt);
    FUZZ_CHECK(same_values(values, piped, r.count, dt));
  }
  if (values != NULL && r.count <= 4096) {
    fuzz_round_trip(&r, values, dt, opener, writer, 0);
    fuzz_round_trip(&r, values, dt, opener, writer, 1);
  }
  free(values);
  free(other);
  free(piped);
  return 0;
}

#endif
