/*
** nm_io.c: IDX and NumPy .npy files, read through zlib (plain or gzip)
** into caller buffers and written from strided tensors.
*/
#define _XOPEN_SOURCE 700           /* realpath */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "nm_io.h"
#include "nm_sys.h"

#if defined(__GNUC__) || defined(__clang__)
#define NM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define NM_PRINTF(f, a)
#endif

#define CHUNK 65536             /* bytes staged per read or write call */
/* deflate emits at least 2 bits per 258-byte match, so no gzip file holds
** more than 1032 uncompressed bytes per compressed byte. */
#define GZIP_MAX_RATIO 1032

/* ----------------------------------------------------------- messages */

NM_PRINTF(5, 6)
static int fail(char *err, size_t errlen, const char *path, int64_t offset,
                const char *fmt, ...) {
  int n = snprintf(err, errlen, "%s: byte %lld: ", path, (long long)offset);
  if (n >= 0 && (size_t)n < errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return NM_EINVAL;
}

/* For failures that concern the whole file rather than a position. */
NM_PRINTF(4, 5)
static int fail_file(char *err, size_t errlen, const char *path, const char *fmt, ...) {
  int n = snprintf(err, errlen, "%s: ", path);
  if (n >= 0 && (size_t)n < errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return NM_EINVAL;
}

/* "60000 x 28 x 28" (or "scalar") */
static const char *dims_str(const int64_t *dims, int ndim, char *buf, size_t len) {
  size_t used = 0;
  buf[0] = '\0';
  if (ndim == 0)
    snprintf(buf, len, "scalar");
  for (int d = 0; d < ndim && used < len; d++) {
    int n = snprintf(buf + used, len - used, d ? " x %lld" : "%lld", (long long)dims[d]);
    if (n < 0)
      break;
    used += (size_t)n;
  }
  return buf;
}

/* -------------------------------------------------------- element types */

size_t nm_io_type_size(nm_io_type t) {
  switch (t) {
    case NM_IO_U8: case NM_IO_I8: return 1;
    case NM_IO_U16: case NM_IO_I16: return 2;
    case NM_IO_U32: case NM_IO_I32: case NM_IO_F32: return 4;
    default: return 8;
  }
}

const char *nm_io_type_name(nm_io_type t) {
  static const char *const names[] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32",
    "uint64", "int64", "float32", "float64"
  };
  return names[t];
}

nm_dtype nm_io_exact_dtype(nm_io_type t) {
  switch (t) {
    case NM_IO_U8: case NM_IO_I8: case NM_IO_U16: case NM_IO_I16: case NM_IO_F32:
      return NM_FLOAT32;
    default:
      return NM_FLOAT64;
  }
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  unsigned char byte;
  memcpy(&byte, &one, 1);
  return byte == 1;
}

static uint64_t load_uint(const unsigned char *p, size_t size, int big_endian) {
  uint64_t v = 0;
  for (size_t i = 0; i < size; i++) {
    size_t k = big_endian ? i : size - 1 - i;
    v = (v << 8) | p[k];
  }
  return v;
}

static void store_uint(unsigned char *p, uint64_t v, size_t size, int big_endian) {
  for (size_t i = 0; i < size; i++) {
    size_t k = big_endian ? size - 1 - i : i;
    p[k] = (unsigned char)(v & 0xff);
    v >>= 8;
  }
}

/* Two's complement of the low `bits` bits, without implementation-defined
** conversions. */
static int64_t sign_extend(uint64_t v, int bits) {
  uint64_t sign = UINT64_C(1) << (bits - 1);
  if (bits < 64)
    v &= (sign << 1) - 1;
  if (!(v & sign))
    return (int64_t)v;
  return -(int64_t)((~v & (sign - 1))) - 1;
}

static double decode(const unsigned char *p, nm_io_type t, int big_endian) {
  size_t size = nm_io_type_size(t);
  uint64_t u = load_uint(p, size, big_endian);
  switch (t) {
    case NM_IO_U8: case NM_IO_U16: case NM_IO_U32: case NM_IO_U64:
      return (double)u;
    case NM_IO_I8: case NM_IO_I16: case NM_IO_I32: case NM_IO_I64:
      return (double)sign_extend(u, (int)(8 * size));
    case NM_IO_F32: {
      uint32_t bits = (uint32_t)u;
      float f;
      memcpy(&f, &bits, sizeof f);
      return f;
    }
    default: {
      double d;
      memcpy(&d, &u, sizeof d);
      return d;
    }
  }
}

/* v has passed nm_io_check_values for t. */
static void encode(unsigned char *p, double v, nm_io_type t, int big_endian) {
  size_t size = nm_io_type_size(t);
  uint64_t u;
  switch (t) {
    case NM_IO_U8: case NM_IO_U16: case NM_IO_U32: case NM_IO_U64:
      u = (uint64_t)v;
      break;
    case NM_IO_I8: case NM_IO_I16: case NM_IO_I32: case NM_IO_I64: {
      int64_t i = (int64_t)v;
      u = i < 0 ? ~(uint64_t)(-(i + 1)) : (uint64_t)i;   /* two's complement */
      break;
    }
    case NM_IO_F32: {
      float f = (float)v;
      uint32_t bits;
      memcpy(&bits, &f, sizeof bits);
      u = bits;
      break;
    }
    default:
      memcpy(&u, &v, sizeof u);
      break;
  }
  store_uint(p, u, size, big_endian);
}

/* ------------------------------------------------------------- reading */

/* The bytes under a reader: a file descriptor, inflated when the file
** starts with the gzip magic. Our own inflate loop (not gzread) so that
** checksum errors, truncation and data after the last gzip member are
** reported at the byte where they happen. */
typedef struct source {
  int fd;
  int gzip;                 /* inflating */
  int z_live;               /* z initialised (inflateEnd due) */
  int fd_end;               /* read() returned 0 */
  int stream_end;           /* gzip: the last member ended, nothing follows */
  int end_checked;          /* the file was seen to end after the payload */
  int64_t file_size;        /* regular file: its size; else -1 */
  int64_t raw;              /* bytes read from fd */
  z_stream z;
  unsigned char *mem;       /* the payload of a stream, read by nm_reader_load */
  size_t mem_len, mem_pos;
  size_t in_pos, in_len;    /* unread input: in[in_pos .. in_len) */
  unsigned char in[CHUNK];
} source;

void nm_reader_init(nm_reader *r) {
  memset(r, 0, sizeof *r);
  r->src = NULL;
  r->path = "";
}

void nm_reader_close(nm_reader *r) {
  source *s = r->src;
  if (s == NULL)
    return;
  if (s->z_live)
    inflateEnd(&s->z);
  close(s->fd);
  free(s->mem);
  free(s);
  r->src = NULL;
}

/* One read(2) of at most n bytes into buf; *got = 0 at the end. Retries
** when a signal interrupts it, unless the user asked to stop. */
static int sys_read(nm_reader *r, void *buf, size_t n, size_t *got, int64_t at,
                    const char *what, char *err, size_t errlen) {
  source *s = r->src;
  for (;;) {
    ssize_t k = read(s->fd, buf, n > (1u << 30) ? (1u << 30) : n);
    if (k >= 0) {
      *got = (size_t)k;
      s->raw += k;
      if (k == 0)
        s->fd_end = 1;
      return NM_OK;
    }
    if (errno == EINTR && !nm_interrupted)
      continue;
    if (errno == EINTR) {
      fail(err, errlen, r->path, at, "interrupted while reading the %s", what);
      return NM_EINTR;
    }
    return fail(err, errlen, r->path, at, "read error in the %s (%s)", what, strerror(errno));
  }
}

/* Tops up the input buffer (keeping unread bytes) until it holds `want`
** bytes or the file ends. */
static int fill_input(nm_reader *r, size_t want, int64_t at, const char *what,
                      char *err, size_t errlen) {
  source *s = r->src;
  if (s->in_pos > 0) {
    memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
    s->in_len -= s->in_pos;
    s->in_pos = 0;
  }
  while (s->in_len < want && !s->fd_end) {
    size_t k = 0;
    int status = sys_read(r, s->in + s->in_len, CHUNK - s->in_len, &k, at, what, err, errlen);
    if (status != NM_OK)
      return status;
    s->in_len += k;
  }
  return NM_OK;
}

/* After a gzip member: another member follows, or the file ends. */
static int gzip_member_end(nm_reader *r, int64_t at, char *err, size_t errlen) {
  source *s = r->src;
  int status = fill_input(r, 2, at, "gzip stream", err, errlen);
  if (status != NM_OK)
    return status;
  size_t left = s->in_len - s->in_pos;
  if (left == 0) {
    s->stream_end = 1;
    return NM_OK;
  }
  if (left >= 2 && s->in[s->in_pos] == 0x1f && s->in[s->in_pos + 1] == 0x8b) {
    inflateReset(&s->z);
    return NM_OK;
  }
  return fail(err, errlen, r->path, at, "unexpected data after the end of the gzip stream "
              "(compressed byte %lld; not another gzip member)",
              (long long)(s->raw - (int64_t)left));
}

/* Up to n bytes of the stream into buf; *got < n only at its end. */
static int source_read(nm_reader *r, unsigned char *buf, size_t n, size_t *got,
                       const char *what, char *err, size_t errlen) {
  source *s = r->src;
  *got = 0;
  if (!s->gzip) {
    size_t have = s->in_len - s->in_pos, k = have < n ? have : n;
    memcpy(buf, s->in + s->in_pos, k);
    s->in_pos += k;
    *got = k;
    while (*got < n && !s->fd_end) {
      int status = sys_read(r, buf + *got, n - *got, &k, r->offset + (int64_t)*got, what,
                            err, errlen);
      if (status != NM_OK)
        return status;
      *got += k;
    }
    return NM_OK;
  }
  while (*got < n && !s->stream_end) {
    int64_t at = r->offset + (int64_t)*got;
    int status;
    if (s->in_pos == s->in_len && !s->fd_end &&
        (status = fill_input(r, 1, at, what, err, errlen)) != NM_OK)
      return status;
    size_t room = n - *got;
    s->z.next_in = s->in + s->in_pos;
    s->z.avail_in = (uInt)(s->in_len - s->in_pos);
    s->z.next_out = buf + *got;
    s->z.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
    uInt before = s->z.avail_out;
    int ret = inflate(&s->z, Z_NO_FLUSH);
    s->in_pos = s->in_len - s->z.avail_in;
    *got += before - s->z.avail_out;
    at = r->offset + (int64_t)*got;
    int64_t zat = s->raw - (int64_t)(s->in_len - s->in_pos);
    if (ret == Z_STREAM_END) {
      if ((status = gzip_member_end(r, at, err, errlen)) != NM_OK)
        return status;
    } else if (ret == Z_OK) {
      continue;
    } else if (ret == Z_BUF_ERROR) {
      if (s->in_pos == s->in_len && s->fd_end)
        return fail(err, errlen, r->path, at, "truncated gzip stream in the %s (the "
                    "compressed data ends at compressed byte %lld)", what, (long long)zat);
    } else if (ret == Z_MEM_ERROR) {
      snprintf(err, errlen, "%s: out of memory inflating the %s", r->path, what);
      return NM_ENOMEM;
    } else if (ret == Z_DATA_ERROR && s->z.msg != NULL &&      /* inflate has just */
               strcmp(s->z.msg, "incorrect data check") == 0) {  /* read the 4 bytes */
      return fail(err, errlen, r->path, at, "gzip checksum error: the CRC-32 stored at "
                  "compressed byte %lld does not match the data (the file is corrupt)",
                  (long long)(zat >= 4 ? zat - 4 : 0));
    } else if (ret == Z_DATA_ERROR && s->z.msg != NULL &&
               strcmp(s->z.msg, "incorrect length check") == 0) {
      return fail(err, errlen, r->path, at, "gzip length error: the size stored at "
                  "compressed byte %lld does not match the data (the file is corrupt)",
                  (long long)(zat >= 4 ? zat - 4 : 0));
    } else {
      return fail(err, errlen, r->path, at, "corrupt gzip data in the %s at compressed "
                  "byte %lld (%s)", what, (long long)zat,
                  s->z.msg != NULL ? s->z.msg : "zlib error");
    }
  }
  return NM_OK;
}

/* Opens path for reading; *file_size is the size of a regular file, -1
** for anything else (a pipe). Opening a FIFO waits for a writer, as
** cat(1) does; Ctrl-C (nm_interrupted) ends the wait. */
static int reader_open(nm_reader *r, const char *path, int64_t *file_size,
                       char *err, size_t errlen) {
  nm_reader_init(r);
  r->path = path;
  int fd;
  while ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 && errno == EINTR && !nm_interrupted)
    ;
  if (fd < 0 && errno == EINTR) {
    fail_file(err, errlen, path, "interrupted while opening");
    return NM_EINTR;
  }
  if (fd < 0)
    return fail_file(err, errlen, path, "cannot open (%s)", strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return fail_file(err, errlen, path, "cannot stat (%s)", strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return fail_file(err, errlen, path, "is a directory");
  }
  source *s = malloc(sizeof *s);
  if (s == NULL) {
    close(fd);
    snprintf(err, errlen, "%s: out of memory opening the file", path);
    return NM_ENOMEM;
  }
  memset(s, 0, offsetof(source, in));
  s->fd = fd;
  s->file_size = *file_size = S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
  r->src = s;
  int status = fill_input(r, 2, 0, "header", err, errlen);
  if (status == NM_OK && s->in_len >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b) {
    if (inflateInit2(&s->z, 16 + MAX_WBITS) != Z_OK) {
      snprintf(err, errlen, "%s: out of memory opening the file", path);
      status = NM_ENOMEM;
    } else {
      s->z_live = 1;
      s->gzip = 1;
    }
  }
  if (status != NM_OK)
    nm_reader_close(r);
  return status;
}

/* Reads exactly n bytes or reports why not; `what` names the part of the
** file ("header", "payload"). */
static int read_exact(nm_reader *r, void *buf, size_t n, const char *what,
                      char *err, size_t errlen) {
  source *s = r->src;
  size_t got = 0;
  if (s->mem != NULL) {
    got = s->mem_len - s->mem_pos < n ? s->mem_len - s->mem_pos : n;
    memcpy(buf, s->mem + s->mem_pos, got);
    s->mem_pos += got;
  } else {
    int status = source_read(r, buf, n, &got, what, err, errlen);
    if (status != NM_OK)
      return status;
  }
  r->offset += (int64_t)got;
  if (got == n)
    return NM_OK;
  if (s->gzip)
    return fail(err, errlen, r->path, r->offset, "truncated %s: the gzip stream ends after "
                "%zu of %zu bytes", what, got, n);
  return fail(err, errlen, r->path, r->offset, "truncated %s (%zu of %zu bytes present)",
              what, got, n);
}

/* The file must end right after the payload. */
static int check_end(nm_reader *r, char *err, size_t errlen) {
  source *s = r->src;
  unsigned char extra;
  size_t got;
  if (s->end_checked)
    return NM_OK;
  int status = source_read(r, &extra, 1, &got, "payload", err, errlen);
  if (status != NM_OK)
    return status;
  if (got > 0)
    return fail(err, errlen, r->path, r->offset,
                "unexpected bytes after the payload (the header's shape disagrees "
                "with the data)");
  s->end_checked = 1;
  return NM_OK;
}

int nm_reader_load(nm_reader *r, char *err, size_t errlen) {
  source *s = r->src;
  if (s == NULL) {
    snprintf(err, errlen, "%s: file is closed", r->path);
    return NM_EINVAL;
  }
  if ((!s->gzip && s->file_size >= 0) || s->mem != NULL)
    return NM_OK;                   /* the size was checked against the file */
  size_t bytes = (size_t)r->count * nm_io_type_size(r->type), cap = 0, len = 0;
  unsigned char *mem = NULL;
  int status = NM_OK;
  while (len < bytes) {
    if (len == cap) {                /* grow with the data actually present */
      size_t next = cap == 0 ? CHUNK : 2 * cap;
      next = next < bytes ? next : bytes;
      unsigned char *grown = realloc(mem, next);
      if (grown == NULL) {
        snprintf(err, errlen, "%s: out of memory reading the payload (%zu bytes)", r->path, next);
        status = NM_ENOMEM;
        break;
      }
      mem = grown;
      cap = next;
    }
    size_t got, want = cap - len;
    status = source_read(r, mem + len, want, &got, "payload", err, errlen);
    if (status != NM_OK)
      break;
    r->offset += (int64_t)got;
    len += got;
    if (got < want) {                /* the stream ended early */
      char dims[160];
      status = fail(err, errlen, r->path, r->offset, "truncated payload: the header declares "
                    "%s %s (%zu bytes) but the %s ends after %zu of them",
                    dims_str(r->dims, r->ndim, dims, sizeof dims), nm_io_type_name(r->type),
                    bytes, s->gzip ? "gzip stream" : "stream", len);
      break;
    }
    if (nm_interrupted) {
      fail(err, errlen, r->path, r->offset, "interrupted");
      status = NM_EINTR;
      break;
    }
  }
  if (status == NM_OK)
    status = check_end(r, err, errlen);
  if (status != NM_OK) {
    free(mem);
    return status;
  }
  s->mem = mem;
  s->mem_len = len;
  s->mem_pos = 0;
  r->offset = r->payload_offset;
  return NM_OK;
}

/* Checks the declared payload against what the file can hold, before
** anyone allocates memory for it. */
static int check_payload_size(nm_reader *r, int64_t file_size, char *err, size_t errlen) {
  char dims[160];
  size_t esize = nm_io_type_size(r->type);
  int64_t bytes = r->count * (int64_t)esize;    /* count was bounded by caller */
  int64_t header = r->payload_offset;
  dims_str(r->dims, r->ndim, dims, sizeof dims);
  if (!r->compressed && file_size >= 0) {
    int64_t have = file_size - header;
    if (have < bytes)
      return fail(err, errlen, r->path, file_size,
                  "truncated payload: the header declares %s %s (%lld bytes) "
                  "but the file has only %lld bytes after the %lld-byte header",
                  dims, nm_io_type_name(r->type), (long long)bytes,
                  (long long)have, (long long)header);
    if (have > bytes)
      return fail(err, errlen, r->path, header + bytes,
                  "%lld unexpected bytes after the payload of %s %s "
                  "(the header's shape disagrees with the file size)",
                  (long long)(have - bytes), dims, nm_io_type_name(r->type));
    return NM_OK;
  }
  if (bytes > NM_IO_MAX_STREAM_BYTES)
    return fail(err, errlen, r->path, header,
                "the header declares %s %s (%lld bytes), over the 4 GiB limit "
                "for compressed files and streams",
                dims, nm_io_type_name(r->type), (long long)bytes);
  if (r->compressed && file_size >= 0 &&
      bytes + header > GZIP_MAX_RATIO * file_size + 1024)
    return fail(err, errlen, r->path, header,
                "the header declares %s %s (%lld bytes) but a gzip file of "
                "%lld bytes cannot hold that much data (truncated or corrupt)",
                dims, nm_io_type_name(r->type), (long long)bytes, (long long)file_size);
  return NM_OK;
}

/* Sets r->count from r->dims, refusing shapes whose sizes (zeros counted
** as ones, so the strides of an empty tensor fit as well) multiply past
** NM_MAX_SPAN; `dim_offsets[i]` gives where dimension i sits in the header. */
static int set_count(nm_reader *r, const int64_t *dim_offsets, char *err, size_t errlen) {
  int bad = 0;
  int64_t count = nm_shape_numel(r->ndim, r->dims, &bad);
  if (count < 0) {
    char dims[160];
    return fail(err, errlen, r->path, dim_offsets[bad],
                "dimension %d (%lld) makes the shape %s too large (more than 2^59 "
                "elements or strides)", bad + 1, (long long)r->dims[bad],
                dims_str(r->dims, r->ndim, dims, sizeof dims));
  }
  r->count = count;
  return NM_OK;
}

static int idx_type(int code, nm_io_type *t) {
  switch (code) {
    case 0x08: *t = NM_IO_U8; return 1;
    case 0x09: *t = NM_IO_I8; return 1;
    case 0x0B: *t = NM_IO_I16; return 1;
    case 0x0C: *t = NM_IO_I32; return 1;
    case 0x0D: *t = NM_IO_F32; return 1;
    case 0x0E: *t = NM_IO_F64; return 1;
    default: return 0;
  }
}

/* Parses the IDX header of the just-opened r. */
static int idx_header(nm_reader *r, int64_t file_size, char *err, size_t errlen) {
  unsigned char head[4], dimbytes[4 * NM_MAXDIM];
  int64_t offsets[NM_MAXDIM];
  int status = read_exact(r, head, 4, "IDX header", err, errlen);
  if (status != NM_OK)
    return status;
  if (head[0] != 0 || head[1] != 0)
    return fail(err, errlen, r->path, 0,
                "bad IDX magic %02x %02x %02x %02x (expected 00 00, type, rank; "
                "is this an IDX file?)", head[0], head[1], head[2], head[3]);
  if (!idx_type(head[2], &r->type))
    return fail(err, errlen, r->path, 2,
                "unknown IDX element type 0x%02x (known: 08 ubyte, 09 byte, "
                "0B short, 0C int, 0D float, 0E double)", head[2]);
  if (head[3] > NM_MAXDIM)
    return fail(err, errlen, r->path, 3,
                "%d dimensions; neuromic tensors have at most %d", head[3], NM_MAXDIM);
  r->ndim = head[3];
  r->big_endian = 1;
  status = read_exact(r, dimbytes, 4 * (size_t)r->ndim, "IDX header", err, errlen);
  if (status != NM_OK)
    return status;
  for (int d = 0; d < r->ndim; d++) {
    r->dims[d] = (int64_t)load_uint(dimbytes + 4 * d, 4, 1);
    offsets[d] = 4 + 4 * d;
  }
  r->payload_offset = r->offset;
  r->compressed = ((source *)r->src)->gzip;
  status = set_count(r, offsets, err, errlen);
  if (status != NM_OK)
    return status;
  return check_payload_size(r, file_size, err, errlen);
}

int nm_idx_open(nm_reader *r, const char *path, char *err, size_t errlen) {
  int64_t file_size;
  int status = reader_open(r, path, &file_size, err, errlen);
  if (status == NM_OK && (status = idx_header(r, file_size, err, errlen)) != NM_OK)
    nm_reader_close(r);
  return status;
}

/* ------------------------------------------------------ npy header dict */

typedef struct header_parser {
  const char *s;
  size_t len, pos;
  int64_t base;              /* file offset of s[0] */
  const char *path;
  char *err;
  size_t errlen;
} header_parser;

NM_PRINTF(2, 3)
static int header_error(header_parser *p, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return fail(p->err, p->errlen, p->path, p->base + (int64_t)p->pos,
              "bad .npy header: %s", msg);
}

static void skip_space(header_parser *p) {
  while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                             p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
    p->pos++;
}

static int peek(header_parser *p) {
  return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int expect_char(header_parser *p, char c) {
  skip_space(p);
  if (peek(p) != c)
    return header_error(p, "expected '%c'", c);
  p->pos++;
  return NM_OK;
}

/* A quoted Python string without escapes; out holds up to outlen-1 bytes. */
static int parse_string(header_parser *p, char *out, size_t outlen) {
  skip_space(p);
  int quote = peek(p);
  if (quote != '\'' && quote != '"')
    return header_error(p, "expected a quoted string");
  size_t start = p->pos + 1, end = start;
  while (end < p->len && p->s[end] != quote)
    end++;
  if (end >= p->len)
    return header_error(p, "unterminated string");
  p->pos = start;
  if (end - start >= outlen)
    return header_error(p, "string too long");
  for (; p->pos < end; p->pos++) {
    if (p->s[p->pos] == '\\')
      return header_error(p, "escape sequences are not supported in strings");
    if ((unsigned char)p->s[p->pos] < 0x20 || p->s[p->pos] == 0x7f)
      return header_error(p, "control byte 0x%02x in a string",
                          (unsigned)(unsigned char)p->s[p->pos]);
    out[p->pos - start] = p->s[p->pos];
  }
  out[end - start] = '\0';
  p->pos = end + 1;
  return NM_OK;
}

static int parse_bool(header_parser *p, int *out) {
  skip_space(p);
  if (p->len - p->pos >= 4 && memcmp(p->s + p->pos, "True", 4) == 0) {
    p->pos += 4;
    *out = 1;
    return NM_OK;
  }
  if (p->len - p->pos >= 5 && memcmp(p->s + p->pos, "False", 5) == 0) {
    p->pos += 5;
    *out = 0;
    return NM_OK;
  }
  return header_error(p, "fortran_order must be True or False");
}

static int parse_shape(header_parser *p, nm_reader *r, int64_t *offsets) {
  int status;
  if ((status = expect_char(p, '(')) != NM_OK)
    return status;
  int n = 0, trailing_comma = 0;
  for (;;) {
    skip_space(p);
    if (peek(p) == ')')
      break;
    if (n > 0 && !trailing_comma)
      return header_error(p, "expected ',' or ')' in shape");
    int c = peek(p);
    if (c < '0' || c > '9')
      return header_error(p, "shape entries must be non-negative integers");
    if (n == NM_MAXDIM)
      return header_error(p, "shape has more than %d dimensions; neuromic tensors "
                          "have at most %d", NM_MAXDIM, NM_MAXDIM);
    offsets[n] = p->base + (int64_t)p->pos;
    int64_t v = 0;
    while ((c = peek(p)) >= '0' && c <= '9') {
      if (v > (INT64_MAX - (c - '0')) / 10)
        return header_error(p, "shape entry too large");
      v = v * 10 + (c - '0');
      p->pos++;
    }
    if (peek(p) == 'L')            /* written by Python 2 */
      p->pos++;
    r->dims[n++] = v;
    skip_space(p);
    trailing_comma = 0;
    if (peek(p) == ',') {
      p->pos++;
      trailing_comma = 1;
    }
  }
  if (n == 1 && !trailing_comma)
    return header_error(p, "shape must be a tuple, '(%lld,)' rather than '(%lld)'",
                        (long long)r->dims[0], (long long)r->dims[0]);
  p->pos++;                         /* ')' */
  r->ndim = n;
  return NM_OK;
}

static int npy_type(header_parser *p, const char *descr, nm_io_type *t, int64_t at) {
  static const struct { char code[3]; nm_io_type type; } kinds[] = {
    {"u1", NM_IO_U8}, {"b1", NM_IO_U8}, {"i1", NM_IO_I8}, {"u2", NM_IO_U16},
    {"i2", NM_IO_I16}, {"u4", NM_IO_U32}, {"i4", NM_IO_I32}, {"u8", NM_IO_U64},
    {"i8", NM_IO_I64}, {"f4", NM_IO_F32}, {"f8", NM_IO_F64}
  };
  size_t save = p->pos;
  p->pos = (size_t)(at - p->base);
  int known = -1;
  if (strlen(descr) == 3) {
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
      if (memcmp(descr + 1, kinds[i].code, 2) == 0)
        known = (int)i;
  }
  if (known < 0) {
    return header_error(p, "unsupported dtype '%s' (supported: <f4 <f8 |u1 |i1 |b1 "
                        "<u2 <i2 <u4 <i4 <u8 <i8)", descr);
  }
  *t = kinds[known].type;
  char order = descr[0];
  int one_byte = nm_io_type_size(*t) == 1;
  if (order == '>' && !one_byte)
    return header_error(p, "big-endian dtype '%s' is not supported (save it as '<%s' "
                        "with numpy's astype)", descr, descr + 1);
  if (!(order == '<' || (one_byte && (order == '|' || order == '>'))))
    return header_error(p, "unsupported byte order '%c' in dtype '%s'", order, descr);
  p->pos = save;
  return NM_OK;
}

static int parse_npy_header(header_parser *p, nm_reader *r, int64_t *offsets) {
  int status, have_descr = 0, have_order = 0, have_shape = 0;
  char descr[32];
  int64_t descr_at = 0;
  if ((status = expect_char(p, '{')) != NM_OK)
    return status;
  for (;;) {
    skip_space(p);
    if (peek(p) == '}')
      break;
    char key[32];
    size_t key_at = p->pos;
    if ((status = parse_string(p, key, sizeof key)) != NM_OK ||
        (status = expect_char(p, ':')) != NM_OK)
      return status;
    skip_space(p);
    if (strcmp(key, "descr") == 0 && !have_descr) {
      have_descr = 1;
      descr_at = p->base + (int64_t)p->pos;
      if (peek(p) == '[')
        return header_error(p, "structured dtypes are not supported");
      if ((status = parse_string(p, descr, sizeof descr)) != NM_OK)
        return status;
    } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
      have_order = 1;
      size_t at = p->pos;
      int fortran = 0;
      if ((status = parse_bool(p, &fortran)) != NM_OK)
        return status;
      if (fortran) {
        p->pos = at;
        return header_error(p, "fortran_order is True; only C-order arrays are "
                            "supported (save with np.ascontiguousarray)");
      }
    } else if (strcmp(key, "shape") == 0 && !have_shape) {
      have_shape = 1;
      if ((status = parse_shape(p, r, offsets)) != NM_OK)
        return status;
    } else {
      p->pos = key_at;
      return header_error(p, (strcmp(key, "descr") == 0 || strcmp(key, "shape") == 0 ||
                              strcmp(key, "fortran_order") == 0)
                                 ? "duplicate key '%s'" : "unexpected key '%s'", key);
    }
    skip_space(p);
    if (peek(p) == ',')
      p->pos++;
    else if (peek(p) != '}')
      return header_error(p, "expected ',' or '}'");
  }
  p->pos++;                          /* '}' */
  skip_space(p);
  if (p->pos != p->len)
    return header_error(p, "unexpected text after the dictionary");
  if (!have_descr || !have_order || !have_shape) {
    p->pos = 0;
    return header_error(p, "missing key '%s'",
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
  }
  return npy_type(p, descr, &r->type, descr_at);
}

/* Reads the header dictionary (hlen bytes from r->offset) and parses it. */
static int npy_dict(nm_reader *r, size_t hlen, int64_t *offsets, char *err, size_t errlen) {
  char *header = malloc(hlen + 1);
  if (header == NULL) {
    snprintf(err, errlen, "%s: out of memory reading the header", r->path);
    return NM_ENOMEM;
  }
  header_parser p = {header, hlen, 0, r->offset, r->path, err, errlen};
  int status = read_exact(r, header, hlen, ".npy header", err, errlen);
  if (status == NM_OK) {
    header[hlen] = '\0';
    status = parse_npy_header(&p, r, offsets);
  }
  free(header);
  return status;
}

/* Parses the preamble and header of the just-opened r. */
static int npy_header(nm_reader *r, int64_t file_size, char *err, size_t errlen) {
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  unsigned char pre[12];
  int64_t offsets[NM_MAXDIM];
  int status = read_exact(r, pre, 8, ".npy preamble", err, errlen);
  if (status != NM_OK)
    return status;
  if (memcmp(pre, magic, 6) != 0)
    return fail(err, errlen, r->path, 0,
                "bad .npy magic (expected \\x93NUMPY; is this a .npy file?)");
  int major = pre[6], minor = pre[7];
  if (major < 1 || major > 3 || minor != 0)
    return fail(err, errlen, r->path, 6, "unsupported .npy format version %d.%d "
                "(known: 1.0, 2.0, 3.0)", major, minor);
  size_t lensize = major == 1 ? 2 : 4;
  status = read_exact(r, pre + 8, lensize, ".npy preamble", err, errlen);
  if (status != NM_OK)
    return status;
  uint64_t hlen = load_uint(pre + 8, lensize, 0);
  if (hlen > (1u << 20))
    return fail(err, errlen, r->path, 8, "header length %llu is implausible "
                "(more than 1 MiB)", (unsigned long long)hlen);
  if (!((source *)r->src)->gzip && file_size >= 0 && r->offset + (int64_t)hlen > file_size)
    return fail(err, errlen, r->path, file_size,
                "truncated header: it declares %llu bytes from byte %lld, "
                "the file ends at byte %lld", (unsigned long long)hlen,
                (long long)r->offset, (long long)file_size);
  status = npy_dict(r, (size_t)hlen, offsets, err, errlen);
  if (status != NM_OK)
    return status;
  r->big_endian = 0;
  r->payload_offset = r->offset;
  r->compressed = ((source *)r->src)->gzip;
  status = set_count(r, offsets, err, errlen);
  if (status != NM_OK)
    return status;
  return check_payload_size(r, file_size, err, errlen);
}

int nm_npy_open(nm_reader *r, const char *path, char *err, size_t errlen) {
  int64_t file_size;
  int status = reader_open(r, path, &file_size, err, errlen);
  if (status == NM_OK && (status = npy_header(r, file_size, err, errlen)) != NM_OK)
    nm_reader_close(r);
  return status;
}

/* Whether float64 holds the magnitude m exactly: at most 53 significant
** bits (so 2^53 + 1 is refused, 2^63 is not). */
static int exact_in_double(uint64_t m) {
  while (m > (UINT64_C(1) << 53) && (m & 1) == 0)
    m >>= 1;
  return m <= (UINT64_C(1) << 53);
}

/* 64-bit integers that float64 cannot hold exactly (beyond 2^53 with more
** than 53 significant bits) are refused rather than rounded. NM_OK or a
** message naming the element and its byte. */
static int check_exact64(const nm_reader *r, const unsigned char *buf, int64_t n,
                         int64_t first, char *err, size_t errlen) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t u = load_uint(buf + 8 * i, 8, r->big_endian), m = u;
    int negative = r->type == NM_IO_I64 && (u >> 63) != 0;
    if (negative)
      m = ~u + 1;                       /* |v|, 2^63 for INT64_MIN */
    if (exact_in_double(m))
      continue;
    char value[32];
    snprintf(value, sizeof value, negative ? "-%llu" : "%llu", (unsigned long long)m);
    return fail(err, errlen, r->path, r->payload_offset + 8 * (first + i),
                "element %lld = %s has no exact float64 value (beyond 2^53 with more "
                "than 53 significant bits); %s values are refused rather than rounded",
                (long long)(first + i + 1), value, nm_io_type_name(r->type));
  }
  return NM_OK;
}

int nm_reader_read(nm_reader *r, void *dst, nm_dtype dt, char *err, size_t errlen) {
  unsigned char buf[CHUNK];
  size_t esize = nm_io_type_size(r->type);
  int64_t per_chunk = (int64_t)(CHUNK / esize), done = 0;
  int direct = host_is_little_endian() == !r->big_endian &&
               ((dt == NM_FLOAT32 && r->type == NM_IO_F32) ||
                (dt == NM_FLOAT64 && r->type == NM_IO_F64));
  if (r->src == NULL) {
    snprintf(err, errlen, "%s: file is closed", r->path);
    return NM_EINVAL;
  }
  while (done < r->count) {
    int64_t n = r->count - done < per_chunk ? r->count - done : per_chunk;
    int status;
    if (direct) {
      unsigned char *out = (unsigned char *)dst + (size_t)done * esize;
      status = read_exact(r, out, (size_t)n * esize, "payload", err, errlen);
    } else {
      status = read_exact(r, buf, (size_t)n * esize, "payload", err, errlen);
      if (status == NM_OK && (r->type == NM_IO_U64 || r->type == NM_IO_I64))
        status = check_exact64(r, buf, n, done, err, errlen);
      if (status == NM_OK) {
        if (dt == NM_FLOAT32) {
          float *out = (float *)dst + done;
          for (int64_t i = 0; i < n; i++)
            out[i] = (float)decode(buf + (size_t)i * esize, r->type, r->big_endian);
        } else {
          double *out = (double *)dst + done;
          for (int64_t i = 0; i < n; i++)
            out[i] = decode(buf + (size_t)i * esize, r->type, r->big_endian);
        }
      }
    }
    if (status != NM_OK)
      return status;
    done += n;
    if (nm_interrupted) {
      fail(err, errlen, r->path, r->offset, "interrupted");
      return NM_EINTR;
    }
  }
  /* The file must end here; reading on also makes zlib verify the CRC. */
  return check_end(r, err, errlen);
}

/* ------------------------------------------------------------- writing */

/* Calls visit(ctx, value) for the elements of t in row-major order of
** the indices; stops at the first non-zero return. */
typedef int (*visit_fn)(void *ctx, double value, const int64_t *idx);

static int for_each(const nm_tensor *t, visit_fn visit, void *ctx) {
  int nd = t->ndim;
  int64_t count = 1;
  for (int d = 0; d < nd; d++)
    count *= t->size[d];
  int64_t idx[NM_MAXDIM] = {0};
  for (int64_t i = 0; i < count; i++) {
    int64_t off = 0;
    for (int d = 0; d < nd; d++)
      off += idx[d] * t->stride[d];
    double v = t->dtype == NM_FLOAT32 ? (double)((const float *)t->data)[off]
                                      : ((const double *)t->data)[off];
    int status = visit(ctx, v, idx);
    if (status != NM_OK)
      return status;
    for (int d = nd - 1; d >= 0; d--) {
      if (++idx[d] < t->size[d])
        break;
      idx[d] = 0;
    }
  }
  return NM_OK;
}

typedef struct check_ctx {
  const nm_tensor *t;
  nm_io_type type;
  double lo, hi_excl;
  char *err;
  size_t errlen;
} check_ctx;

static int check_one(void *vctx, double v, const int64_t *idx) {
  check_ctx *c = vctx;
  if (v >= c->lo && v < c->hi_excl && v == floor(v))
    return NM_OK;
  char where[128] = "[";
  size_t used = 1;
  for (int d = 0; d < c->t->ndim; d++) {
    int n = snprintf(where + used, sizeof where - used, d ? ", %lld" : "%lld",
                     (long long)idx[d] + 1);
    if (n < 0 || (size_t)n >= sizeof where - used)
      break;
    used += (size_t)n;
  }
  if (used < sizeof where - 1) {
    where[used++] = ']';
    where[used] = '\0';
  }
  snprintf(c->err, c->errlen, "element %s = %.17g is not representable as %s "
           "(integers from %.0f to %.0f)", c->t->ndim ? where : "[]", v,
           nm_io_type_name(c->type), c->lo, c->hi_excl - 1);
  return NM_EINVAL;
}

int nm_io_check_values(const nm_tensor *t, nm_io_type type, char *err, size_t errlen) {
  check_ctx c = {t, type, 0, 0, err, errlen};
  switch (type) {
    case NM_IO_F32: case NM_IO_F64: return NM_OK;
    case NM_IO_U8:  c.lo = 0; c.hi_excl = 256.0; break;
    case NM_IO_I8:  c.lo = -128.0; c.hi_excl = 128.0; break;
    case NM_IO_U16: c.lo = 0; c.hi_excl = 65536.0; break;
    case NM_IO_I16: c.lo = -32768.0; c.hi_excl = 32768.0; break;
    case NM_IO_U32: c.lo = 0; c.hi_excl = 4294967296.0; break;
    case NM_IO_I32: c.lo = -2147483648.0; c.hi_excl = 2147483648.0; break;
    case NM_IO_U64: c.lo = 0; c.hi_excl = 18446744073709551616.0; break;
    case NM_IO_I64: c.lo = -9223372036854775808.0; c.hi_excl = 9223372036854775808.0; break;
  }
  return for_each(t, check_one, &c);
}

typedef struct writer {
  int fd;
  int gzip;                 /* deflating into zout */
  z_stream z;
  const char *path;
  nm_io_type type;
  int big_endian;
  size_t used;
  int64_t written;          /* uncompressed bytes handed on */
  char *err;
  size_t errlen;
  unsigned char buf[CHUNK];
  unsigned char zout[CHUNK];
} writer;

/* Writes n bytes to fd, retrying after signals unless the user asked to
** stop; 0 or an errno value (EINTR when interrupted). */
static int sys_write(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (k < 0 && errno == EINTR && !nm_interrupted)
      continue;
    if (k < 0)
      return errno;
    if (k == 0)
      return ENOSPC;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int write_error(writer *w, int e) {
  if (e == EINTR) {
    fail(w->err, w->errlen, w->path, w->written, "interrupted");
    return NM_EINTR;
  }
  return fail(w->err, w->errlen, w->path, w->written, "write error (%s)", strerror(e));
}

/* Deflates what z holds (finishing the stream when `finish`) and writes
** the compressed bytes. */
static int writer_deflate(writer *w, int finish) {
  for (;;) {
    w->z.next_out = w->zout;
    w->z.avail_out = CHUNK;
    int ret = deflate(&w->z, finish ? Z_FINISH : Z_NO_FLUSH);
    if (ret == Z_STREAM_ERROR)
      return fail(w->err, w->errlen, w->path, w->written, "zlib error while compressing");
    int e = sys_write(w->fd, w->zout, CHUNK - w->z.avail_out);
    if (e != 0)
      return write_error(w, e);
    if (finish ? ret == Z_STREAM_END : (w->z.avail_in == 0 && w->z.avail_out > 0))
      return NM_OK;
  }
}

static int writer_flush(writer *w) {
  if (w->used == 0)
    return NM_OK;
  int status = NM_OK;
  if (w->gzip) {
    w->z.next_in = w->buf;
    w->z.avail_in = (uInt)w->used;
    status = writer_deflate(w, 0);
  } else {
    int e = sys_write(w->fd, w->buf, w->used);
    if (e != 0)
      status = write_error(w, e);
  }
  if (status != NM_OK)
    return status;
  w->written += (int64_t)w->used;
  w->used = 0;
  if (nm_interrupted) {
    fail(w->err, w->errlen, w->path, w->written, "interrupted");
    return NM_EINTR;
  }
  return NM_OK;
}

static int writer_put(writer *w, const void *bytes, size_t n) {
  const unsigned char *p = bytes;
  while (n > 0) {
    size_t room = CHUNK - w->used, k = n < room ? n : room;
    memcpy(w->buf + w->used, p, k);
    w->used += k;
    p += k;
    n -= k;
    if (w->used == CHUNK) {
      int status = writer_flush(w);
      if (status != NM_OK)
        return status;
    }
  }
  return NM_OK;
}

static int write_one(void *vw, double v, const int64_t *idx) {
  writer *w = vw;
  unsigned char bytes[8];
  (void)idx;
  encode(bytes, v, w->type, w->big_endian);
  return writer_put(w, bytes, nm_io_type_size(w->type));
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Header, payload and (gzip) trailer of t into w->fd. */
static int write_stream(writer *w, const nm_tensor *t, const unsigned char *header,
                        size_t hlen) {
  int status = writer_put(w, header, hlen);
  if (status == NM_OK)
    status = for_each(t, write_one, w);
  if (status == NM_OK)
    status = writer_flush(w);
  if (status == NM_OK && w->gzip)
    status = writer_deflate(w, 1);
  return status;
}

/* Where the bytes go: a regular file (or a new one) is replaced
** atomically (nm_atomic_open/commit: a temporary file in its folder,
** fsync'd, renamed over it), so a failure or a kill leaves the old file
** whole (at worst a temporary beside it); it keeps the old file's
** permissions; a symbolic link is followed, so the file it names is
** replaced. A device or FIFO (/dev/stdout) is written in place and never
** removed. */
static int write_file(const char *path, const nm_tensor *t, nm_io_type type,
                      int big_endian, const unsigned char *header, size_t hlen,
                      char *err, size_t errlen) {
  struct stat st;
  int exists = stat(path, &st) == 0;
  if (exists && S_ISDIR(st.st_mode))
    return fail_file(err, errlen, path, "cannot write: is a directory");
  int in_place = exists && !S_ISREG(st.st_mode), fd = -1, e = 0;
  char *target = NULL, *tmp = NULL;
  if (in_place) {
    while ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0 && errno == EINTR && !nm_interrupted)
      ;
    e = fd < 0 ? errno : 0;
  } else {
    target = exists ? realpath(path, NULL) : strdup(path);
    e = target == NULL ? errno
                       : nm_atomic_open(target, exists ? st.st_mode & 07777 : 0666, &tmp, &fd);
  }
  if (e != 0) {
    free(target);
    if (e == EINTR) {
      fail_file(err, errlen, path, "interrupted");
      return NM_EINTR;
    }
    return fail_file(err, errlen, path, "cannot open for writing (%s%s)", strerror(e),
                     in_place ? "" : ", creating a temporary file in its folder");
  }
  int status = NM_OK;
  int64_t written = 0;
  writer *w = malloc(sizeof *w);
  if (w == NULL) {
    snprintf(err, errlen, "%s: out of memory", path);
    status = NM_ENOMEM;
  } else {
    memset(w, 0, offsetof(writer, buf));
    w->fd = fd;
    w->path = path;
    w->type = type;
    w->big_endian = big_endian;
    w->err = err;
    w->errlen = errlen;
    w->gzip = ends_with(path, ".gz");
    if (w->gzip && deflateInit2(&w->z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8,
                                Z_DEFAULT_STRATEGY) != Z_OK) {
      snprintf(err, errlen, "%s: out of memory", path);
      status = NM_ENOMEM;
      w->gzip = 0;
    }
    if (status == NM_OK)
      status = write_stream(w, t, header, hlen);
    if (w->gzip)
      deflateEnd(&w->z);
    written = w->written;
    free(w);
  }
  if (in_place) {
    if (close(fd) != 0 && status == NM_OK)
      status = fail(err, errlen, path, written, "write error on close (%s)", strerror(errno));
  } else if (status != NM_OK) {
    nm_atomic_abort(fd, tmp);                /* never the target */
  } else {
    const char *step = "";
    e = nm_atomic_commit(fd, tmp, target, NULL, &step);
    if (e != 0)
      status = fail(err, errlen, path, written, "write error on %s (%s)", step, strerror(e));
  }
  free(target);
  return status;
}

int nm_idx_write(const char *path, const nm_tensor *t, nm_io_type type,
                 char *err, size_t errlen) {
  static const int codes[] = {0x08, 0x09, 0, 0x0B, 0, 0x0C, 0, 0, 0x0D, 0x0E};
  if (codes[type] == 0)
    return fail_file(err, errlen, path, "IDX files cannot hold %s elements "
                     "(ubyte, byte, short, int, float, double)", nm_io_type_name(type));
  unsigned char header[4 + 4 * NM_MAXDIM] = {0, 0, (unsigned char)codes[type],
                                             (unsigned char)t->ndim};
  for (int d = 0; d < t->ndim; d++) {
    if (t->size[d] > INT64_C(0xffffffff))
      return fail_file(err, errlen, path, "dimension %d (%lld) does not fit the IDX "
                       "header's 32 bits", d + 1, (long long)t->size[d]);
    store_uint(header + 4 + 4 * d, (uint64_t)t->size[d], 4, 1);
  }
  int status = nm_io_check_values(t, type, err, errlen);
  if (status != NM_OK) {
    char msg[NM_IO_ERRLEN];
    snprintf(msg, sizeof msg, "%s", err);
    return fail_file(err, errlen, path, "%s", msg);
  }
  return write_file(path, t, type, 1, header, 4 + 4 * (size_t)t->ndim, err, errlen);
}

int nm_npy_write(const char *path, const nm_tensor *t, nm_io_type type,
                 char *err, size_t errlen) {
  static const char *const descr[] = {
    "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8"
  };
  char dict[256], shape[160] = "(";
  size_t used = 1;
  for (int d = 0; d < t->ndim; d++) {
    int n = snprintf(shape + used, sizeof shape - used, d ? " %lld," : "%lld,",
                     (long long)t->size[d]);
    used += (size_t)n;
  }
  if (t->ndim > 1)
    shape[--used] = '\0';              /* numpy writes (3, 4) but (3,) */
  snprintf(shape + used, sizeof shape - used, ")");
  int dlen = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, "
                      "'shape': %s, }", descr[type], shape);
  /* Pad with spaces and a newline so the payload starts 64-byte aligned. */
  size_t total = 10 + (size_t)dlen + 1;
  total = (total + 63) / 64 * 64;
  unsigned char header[320];
  size_t hlen = total - 10;
  memcpy(header, "\x93NUMPY\x01\x00", 8);
  store_uint(header + 8, hlen, 2, 0);
  memcpy(header + 10, dict, (size_t)dlen);
  memset(header + 10 + dlen, ' ', hlen - (size_t)dlen - 1);
  header[total - 1] = '\n';
  int status = nm_io_check_values(t, type, err, errlen);
  if (status != NM_OK) {
    char msg[NM_IO_ERRLEN];
    snprintf(msg, sizeof msg, "%s", err);
    return fail_file(err, errlen, path, "%s", msg);
  }
  return write_file(path, t, type, 0, header, total, err, errlen);
}
