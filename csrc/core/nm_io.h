/*
** nm_io.h: binary array files, IDX (the MNIST format, plain or gzip
** compressed) and NumPy .npy, read into and written from nm_tensor.
** Never includes lua.h. Reading takes two steps so the caller can own the
** memory: open (parses and checks the header, reports dims and element
** type), then read the payload into a caller buffer, converting to
** float32 or float64. Every failure leaves a message in the caller's
** buffer naming the file, the byte offset and what is wrong:
**   "train.idx: byte 16: truncated payload (...)"
*/
#ifndef NM_IO_H
#define NM_IO_H

#include <stddef.h>
#include <stdint.h>
#include "nm_tensor.h"

/* Element types found in files. */
typedef enum {
  NM_IO_U8, NM_IO_I8, NM_IO_U16, NM_IO_I16, NM_IO_U32, NM_IO_I32,
  NM_IO_U64, NM_IO_I64, NM_IO_F32, NM_IO_F64
} nm_io_type;

size_t nm_io_type_size(nm_io_type t);
/* numpy-style name: "uint8", "int32", "float32", ... */
const char *nm_io_type_name(nm_io_type t);
/* Smallest tensor dtype that holds every value of t exactly
** (uint8/int8/int16/uint16/float32 -> float32, the rest -> float64). */
nm_dtype nm_io_exact_dtype(nm_io_type t);

/* Upper bound on the uncompressed payload of a gzip file or a file of
** unknown size (a pipe): 4 GiB. */
#define NM_IO_MAX_STREAM_BYTES (INT64_C(4) << 30)
/* Default bound on the bytes of a tensor loaded from a file (the Lua
** binding's max_bytes option): 1 GiB, room for MNIST-sized sets in
** float64 (376 MB) while a 520 KB gzip bomb declaring 512 MB of bytes
** (2 GiB as float32) is refused before it is inflated. */
#define NM_IO_DEFAULT_MAX_BYTES (INT64_C(1) << 30)
/* Suggested size of error buffers. */
#define NM_IO_ERRLEN 512

/* An open file, positioned at the start of its payload. */
typedef struct nm_reader {
  void *src;                /* the open file (nm_io.c); NULL when closed */
  const char *path;         /* the caller's string, used in messages */
  int compressed;           /* gzip stream (offsets count uncompressed bytes) */
  int big_endian;           /* IDX: 1, npy: 0 */
  nm_io_type type;
  int ndim;                 /* 0..NM_MAXDIM */
  int64_t dims[NM_MAXDIM];
  int64_t count;            /* product of dims */
  int64_t offset;           /* bytes consumed so far */
  int64_t payload_offset;   /* header length */
} nm_reader;

/* Initialises r to the closed state (safe to close). */
void nm_reader_init(nm_reader *r);
/* Opens path and parses an IDX header: 0x00 0x00, type byte (0x08 ubyte,
** 0x09 sbyte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), number
** of dimensions, then the dimensions as big-endian uint32. gzip files are
** detected and inflated transparently. Checks that the declared payload
** matches the file size (plain files) or fits the bound a gzip file of
** that size can hold. NM_OK or NM_EINVAL/NM_ENOMEM with a message; on
** failure r is closed. */
int nm_idx_open(nm_reader *r, const char *path, char *err, size_t errlen);
/* Same for NumPy .npy, format versions 1.0, 2.0 and 3.0: little-endian or
** byte-sized dtypes among u1 i1 u2 i2 u4 i4 u8 i8 f4 f8, C order only. */
int nm_npy_open(nm_reader *r, const char *path, char *err, size_t errlen);
/* For a pipe or a gzip file, whose real payload size a header cannot be
** checked against before reading, reads the payload into memory that
** grows with the bytes actually present (never to more than the header
** declares) and checks that the file ends there; so a caller that calls
** it before allocating r->count elements allocates only for data that
** exists. A no-op for plain regular files, checked at open. */
int nm_reader_load(nm_reader *r, char *err, size_t errlen);
/* Reads the r->count elements of the payload into dst (contiguous, dtype
** dt), converting, and checks that the file ends right after them. Polls
** nm_interrupted (NM_EINTR). 64-bit integers beyond 2^53 in magnitude
** are refused (no float64 holds them exactly). The reader stays open;
** close it after. */
int nm_reader_read(nm_reader *r, void *dst, nm_dtype dt, char *err, size_t errlen);
/* Closes the file if open; idempotent. */
void nm_reader_close(nm_reader *r);

/* Checks that every element of t is exactly representable as `type`
** (integral and in range for integer types; float32 never fails, values
** out of float range become infinities as in a cast). NM_OK or NM_EINVAL
** with a message naming the element. Writers call it first, so a file is
** never left half written because of a value. */
int nm_io_check_values(const nm_tensor *t, nm_io_type type, char *err, size_t errlen);
/* Writes t (any strides, either dtype) as an IDX file of element `type`
** (u8, i8, i16, i32, f32 or f64); gzip-compressed when path ends in
** ".gz". Dimensions must fit in uint32. On failure removes the partial
** file. */
int nm_idx_write(const char *path, const nm_tensor *t, nm_io_type type, char *err, size_t errlen);
/* Writes t as .npy version 1.0 (C order, little-endian `type`, one of
** u8 i32 i64 f32 f64 or the other integer widths). */
int nm_npy_write(const char *path, const nm_tensor *t, nm_io_type type, char *err, size_t errlen);

#endif
