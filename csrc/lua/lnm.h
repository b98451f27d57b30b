/*
** lnm.h: shared helpers of the neuromic Lua binding (one file per Lua
** type: ltensor.c, lrandom.c, lio.c, ...).
*/
#ifndef LNM_H
#define LNM_H

#include "lua.h"
#include "lauxlib.h"
#include "nm_tensor.h"
#include "nm_meta.h"

#define NM_TENSOR_T "neuromic.Tensor"

/* The Tensor userdata: a header plus, in user value 1, the storage
** userdata that owns the bytes (shared by every view of it). A closed
** tensor has data == NULL and no storage. */
typedef struct nm_ltensor {
  nm_tensor t;
  const void *storage;        /* the userdata in user value 1, and its length: */
  size_t storage_len;         /* nm_checktensor closes the tensor if it changed */
} nm_ltensor;

/* Checked cast: raises "bad argument #i (neuromic.Tensor expected...)" or
** "tensor is closed". */
nm_tensor *nm_checktensor(lua_State *L, int arg);
/* NULL when the value at arg is not a live tensor. */
nm_tensor *nm_totensor(lua_State *L, int arg);

/* Pushes a fresh contiguous tensor whose storage is a full userdata, so
** the garbage collector sees its size. Contents are zeroed. Allocates. */
nm_tensor *nm_newtensor(lua_State *L, nm_dtype dt, int ndim, const int64_t *size);
/* Same, shaped like `like` (contents zeroed). */
nm_tensor *nm_newtensor_like(lua_State *L, const nm_tensor *like, nm_dtype dt);
/* Pushes a new header sharing the storage of the tensor at `parent`
** (a view); the caller then narrows/selects/transposes the header. */
nm_tensor *nm_pushview(lua_State *L, int parent);

/* Argument checks that raise Lua errors naming the shapes or dtypes:
**   bad argument #2 to 'add' (size mismatch, [3 x 4] vs [5 x 2]) */
void nm_check_same_shape(lua_State *L, int arg, const nm_tensor *a, const nm_tensor *b);
void nm_check_same_dtype(lua_State *L, int arg, const nm_tensor *a, const nm_tensor *b);
void nm_check_dim(lua_State *L, int arg, const nm_tensor *a, int ndim);
/* Raises "bad argument #arg (name is float32 [3 x 4], expected <expect>)". */
void nm_shape_argerror(lua_State *L, int arg, const char *name, const nm_tensor *t,
                       const char *expect);
/* Raises "bad argument #args[j] (names[i] shares memory with names[j])"
** when one of the first nout tensors of ts (the ones a kernel writes)
** overlaps any other of the n (NULL entries are skipped): kernels that
** read while they write would otherwise give silently wrong values. */
void nm_check_disjoint(lua_State *L, int nout, int n, const int *args,
                       const char *const *names, const nm_tensor *const *ts);
/* The checks of a row gather B <- rows idx[first ..] of X (B:index_rows,
** nm.gather): B at arg bi, X at arg bi + 1, the indices at arg ii (a list,
** or a 1-D tensor returned in *it, else NULL); row sizes, disjointness and
** the list's length. Returns the rows of B. */
int64_t nm_gather_check(lua_State *L, int bi, int ii, lua_Integer first, nm_tensor **it);
/* The index at position pos of the list or tensor at arg ii, checked to be
** a row of a tensor of nrows rows; 0-based. */
int64_t nm_gather_index(lua_State *L, int ii, const nm_tensor *it, lua_Integer pos,
                        int64_t nrows);
/* Raises "bad argument #args[i] (names[i] was closed during the call)"
** for a closed tensor among ts[0..n-1] (NULL entries skipped): for the
** last check before a kernel when reading options ran metamethods. */
void nm_check_open(lua_State *L, int n, const int *args, const char *const *names,
                   const nm_tensor *const *ts);
/* Scratch memory of at least `bytes` bytes kept in user value `slot` of
** the userdata at `owner`; replaced only when too small, so steady-state
** loops allocate nothing. The collector sees it like any tensor. */
void *nm_scratch(lua_State *L, int owner, int slot, size_t bytes);
/* A file path at arg: a string without NUL bytes (the C library would
** see a shorter path), else "bad argument #arg (path contains a NUL byte
** (at byte k))". nm_optpath: NULL when absent. Defined in lio.c. */
const char *nm_checkpath(lua_State *L, int arg);
const char *nm_optpath(lua_State *L, int arg);
/* Accepts "float32"/"float"/"float64"/"double" at arg, or def if absent. */
nm_dtype nm_optdtype(lua_State *L, int arg, nm_dtype def);
/* Reads a dtype from field "dtype" of an options table at arg (or def). */
nm_dtype nm_dtype_field(lua_State *L, int arg, nm_dtype def);
/* Turns a core status code into a Lua error ("interrupted!" for NM_EINTR). */
int nm_status_error(lua_State *L, int status, const char *what);

/* Submodule openers: each adds its functions to the table at absolute
** index `module` and its Tensor methods to the table at absolute index
** `methods`. Listed in lneuromic.c, which passes the module itself to the
** tensor library's openers (nm_open_sys adds the namespace nm.sys) and
** the namespace nm.kernels to the openers of the model kernels. */
/* A compiled rule kernel's calling convention (nm.compile, lkernel.c) and
** one bound call of it (k:bind): arrays and scalars checked once, which C
** code (a model's time loop) may call as often as it likes. The call
** userdata owns them; keep it alive while they are used. */
typedef int (*nm_kernel_fn)(void *const *in, void *const *out, void *scratch, const double *sc);
typedef struct nm_kernel_call {
  nm_kernel_fn fn;
  void *const *in, *const *out;
  void *scratch;
  double *sc;
  int nscalar;
} nm_kernel_call;
/* The KernelCall at arg (an argument error otherwise). */
nm_kernel_call *nm_tokernelcall(lua_State *L, int arg);
/* Whether the kernel of the KernelCall at arg is still loaded (k:close()). */
int nm_kernelcall_live(lua_State *L, int arg);

void nm_open_tensor(lua_State *L, int module, int methods);
void nm_open_tensor_math(lua_State *L, int module, int methods);
void nm_open_tensor_linalg(lua_State *L, int module, int methods);
void nm_open_random(lua_State *L, int module, int methods);
void nm_open_io(lua_State *L, int module, int methods);
void nm_open_sys(lua_State *L, int module, int methods);
void nm_open_nk(lua_State *L, int module, int methods);
void nm_open_synth(lua_State *L, int module, int methods);
void nm_open_plastic(lua_State *L, int kernels, int methods);
void nm_open_bmvr(lua_State *L, int module, int methods);
void nm_open_microcircuit(lua_State *L, int module, int methods);
void nm_open_mlp(lua_State *L, int kernels, int methods);
void nm_open_meta(lua_State *L, int module, int methods);
void nm_open_folded(lua_State *L, int module, int methods);
void nm_open_kernel(lua_State *L, int module, int methods);
void nm_open_gather(lua_State *L, int module, int methods);

int luaopen_neuromic(lua_State *L);

#endif
