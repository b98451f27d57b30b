/*
** ltensor.c: the neuromic.Tensor Lua type: construction, storage, views,
** element access, printing and serialisation to bytes.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lnm.h"
#include "nm_math.h"

/* Storage is a bare full userdata, so the collector counts its bytes; the
** tensor header keeps it in user value 1. Over-allocated by NM_ALIGN so
** the data can start on a cache line (BLAS likes it). */
#define NM_ALIGN 64

#define NM_SIZE_T "neuromic.Size"

#define totensorud(L, i) ((nm_ltensor *)luaL_testudata(L, i, NM_TENSOR_T))

/* The storage in user value 1 is the one the header was made with: the
** debug library can replace or remove it (debug.setuservalue), and the
** collector then frees the bytes the header points into. A header whose
** storage is gone is closed here, before anyone reads through it. */
static nm_ltensor *live(lua_State *L, int arg, nm_ltensor *lt) {
  if (lt == NULL || lt->t.data == NULL) return lt;
  lua_getiuservalue(L, arg, 1);
  int same = lua_touserdata(L, -1) == lt->storage && lua_rawlen(L, -1) == lt->storage_len;
  lua_pop(L, 1);
  if (!same) lt->t.data = NULL;
  return lt;
}

nm_tensor *nm_totensor(lua_State *L, int arg) {
  nm_ltensor *lt = live(L, arg, totensorud(L, arg));
  return (lt != NULL && lt->t.data != NULL) ? &lt->t : NULL;
}

nm_tensor *nm_checktensor(lua_State *L, int arg) {
  nm_ltensor *lt = live(L, arg, (nm_ltensor *)luaL_checkudata(L, arg, NM_TENSOR_T));
  if (lt->t.data == NULL)
    luaL_argerror(L, arg, "attempt to use a closed tensor");
  return &lt->t;
}

/* A header in a safe empty state (closed, no storage) first; filled after. */
static nm_ltensor *newheader(lua_State *L) {
  nm_ltensor *lt = (nm_ltensor *)lua_newuserdatauv(L, sizeof(nm_ltensor), 1);
  memset(lt, 0, sizeof *lt);
  luaL_setmetatable(L, NM_TENSOR_T);
  return lt;
}

/* The number of elements of a tensor of these sizes; raises when a size is
** negative or the count, the byte count or a stride would overflow (zero
** sizes do not exempt the others: an empty tensor has strides too). */
static int64_t checked_numel(lua_State *L, int ndim, const int64_t *size) {
  for (int d = 0; d < ndim; d++)
    if (size[d] < 0) luaL_error(L, "negative tensor size %I", (lua_Integer)size[d]);
  int64_t n = nm_shape_numel(ndim, size, NULL);
  if (n < 0) luaL_error(L, "tensor too large");
  return n;
}

nm_tensor *nm_newtensor(lua_State *L, nm_dtype dt, int ndim, const int64_t *size) {
  int64_t n = checked_numel(L, ndim, size);
  size_t nbytes = (size_t)n * nm_dtype_size(dt);
  nm_ltensor *lt = newheader(L);
  void *raw = lua_newuserdatauv(L, nbytes + NM_ALIGN, 0);
  void *data = (void *)(((uintptr_t)raw + NM_ALIGN - 1) & ~(uintptr_t)(NM_ALIGN - 1));
  memset(data, 0, nbytes);
  lua_setiuservalue(L, -2, 1);
  nm_init_contiguous(&lt->t, dt, ndim, size);
  lt->t.data = data;
  lt->storage = raw;
  lt->storage_len = nbytes + NM_ALIGN;
  return &lt->t;
}

nm_tensor *nm_newtensor_like(lua_State *L, const nm_tensor *like, nm_dtype dt) {
  return nm_newtensor(L, dt, like->ndim, like->size);
}

nm_tensor *nm_pushview(lua_State *L, int parent) {
  nm_checktensor(L, parent);
  parent = lua_absindex(L, parent);
  nm_ltensor *lt = newheader(L);
  lua_getiuservalue(L, parent, 1);
  lua_setiuservalue(L, -2, 1);
  *lt = *(nm_ltensor *)lua_touserdata(L, parent);
  return &lt->t;
}

void nm_check_same_shape(lua_State *L, int arg, const nm_tensor *a, const nm_tensor *b) {
  if (!nm_same_shape(a, b)) {
    char sa[96], sb[96];
    nm_shape_str(a, sa, sizeof sa);
    nm_shape_str(b, sb, sizeof sb);
    lua_pushfstring(L, "size mismatch, %s vs %s", sa, sb);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

void nm_check_same_dtype(lua_State *L, int arg, const nm_tensor *a, const nm_tensor *b) {
  if (a->dtype != b->dtype) {
    lua_pushfstring(L, "dtype mismatch, %s vs %s", nm_dtype_name(a->dtype),
                    nm_dtype_name(b->dtype));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

void nm_check_dim(lua_State *L, int arg, const nm_tensor *a, int ndim) {
  if (a->ndim != ndim) {
    char sa[96];
    nm_shape_str(a, sa, sizeof sa);
    lua_pushfstring(L, "%d-D tensor expected, got %s", ndim, sa);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

void nm_shape_argerror(lua_State *L, int arg, const char *name, const nm_tensor *t,
                       const char *expect) {
  char s[96];
  nm_shape_str(t, s, sizeof s);
  lua_pushfstring(L, "%s is %s %s, expected %s", name, nm_dtype_name(t->dtype), s, expect);
  luaL_argerror(L, arg, lua_tostring(L, -1));
}

void nm_check_disjoint(lua_State *L, int nout, int n, const int *args,
                       const char *const *names, const nm_tensor *const *ts) {
  for (int i = 0; i < nout; i++) {
    if (ts[i] == NULL) continue;
    for (int j = 0; j < n; j++) {
      if (j == i || ts[j] == NULL || !nm_overlap(ts[i], ts[j])) continue;
      lua_pushfstring(L, "%s shares memory with %s", names[i], names[j]);
      luaL_argerror(L, args[j], lua_tostring(L, -1));
    }
  }
}

void nm_check_open(lua_State *L, int n, const int *args, const char *const *names,
                   const nm_tensor *const *ts) {
  for (int i = 0; i < n; i++) {
    if (ts[i] == NULL || ts[i]->data != NULL) continue;
    lua_pushfstring(L, "%s was closed during the call", names[i]);
    luaL_argerror(L, args[i], lua_tostring(L, -1));
  }
}

void *nm_scratch(lua_State *L, int owner, int slot, size_t bytes) {
  owner = lua_absindex(L, owner);
  lua_getiuservalue(L, owner, slot);
  void *p = lua_touserdata(L, -1);
  size_t have = p != NULL ? lua_rawlen(L, -1) : 0;
  lua_pop(L, 1);
  if (p != NULL && have >= bytes) return p;
  p = lua_newuserdatauv(L, bytes > 0 ? bytes : 1, 0);
  lua_setiuservalue(L, owner, slot);
  return p;
}

static int parsedtype(const char *s, nm_dtype *out) {
  if (strcmp(s, "float32") == 0 || strcmp(s, "float") == 0) *out = NM_FLOAT32;
  else if (strcmp(s, "float64") == 0 || strcmp(s, "double") == 0) *out = NM_FLOAT64;
  else return 0;
  return 1;
}

nm_dtype nm_optdtype(lua_State *L, int arg, nm_dtype def) {
  if (lua_isnoneornil(L, arg)) return def;
  nm_dtype dt = def;
  if (!parsedtype(luaL_checkstring(L, arg), &dt))
    luaL_argerror(L, arg, "dtype must be 'float32' or 'float64'");
  return dt;
}

nm_dtype nm_dtype_field(lua_State *L, int arg, nm_dtype def) {
  if (!lua_istable(L, arg)) return def;
  lua_getfield(L, arg, "dtype");
  nm_dtype dt = def;
  if (!lua_isnil(L, -1)) {
    const char *s = lua_tostring(L, -1);
    if (s == NULL || !parsedtype(s, &dt))
      luaL_argerror(L, arg, "dtype must be 'float32' or 'float64'");
  }
  lua_pop(L, 1);
  return dt;
}

int nm_status_error(lua_State *L, int status, const char *what) {
  switch (status) {
    case NM_EINTR: nm_interrupted = 0; return luaL_error(L, "interrupted!");
    case NM_ENOMEM: return luaL_error(L, "%s: out of memory", what);
    case NM_ENONFINITE: return luaL_error(L, "%s: non-finite value", what);
    default: return luaL_error(L, "%s: invalid argument", what);
  }
}

/* ---------------------------------------------------------------------- */
/* Constructors */

/* Reads dims from arguments first..: numbers, or one table of numbers;
** a trailing string or options table gives the dtype. Returns ndim. */
static int checkdims(lua_State *L, int first, int64_t *size, nm_dtype *dt) {
  int top = lua_gettop(L), ndim = 0;
  *dt = NM_FLOAT32;
  if (top >= first && lua_type(L, top) == LUA_TSTRING) *dt = nm_optdtype(L, top--, NM_FLOAT32);
  else if (top >= first && lua_istable(L, top) && lua_rawlen(L, top) == 0 && top > first)
    *dt = nm_dtype_field(L, top--, NM_FLOAT32);
  if (top == first && lua_istable(L, first)) {
    int n = (int)lua_rawlen(L, first);
    if (n > NM_MAXDIM) luaL_argerror(L, first, "too many dimensions (at most 4)");
    for (int i = 0; i < n; i++) {
      lua_rawgeti(L, first, i + 1);
      lua_Integer v = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) && !(lua_isnumber(L, -1) && v == lua_tonumber(L, -1)))
        luaL_argerror(L, first, "sizes must be integers");
      if (v < 0) luaL_argerror(L, first, "sizes must be non-negative");
      size[ndim++] = v;
      lua_pop(L, 1);
    }
    return ndim;
  }
  for (int i = first; i <= top; i++) {
    if (ndim == NM_MAXDIM) luaL_argerror(L, i, "too many dimensions (at most 4)");
    lua_Integer v = luaL_checkinteger(L, i);
    if (v < 0) luaL_argerror(L, i, "size must be non-negative");
    size[ndim++] = v;
  }
  return ndim;
}

static int t_zeros(lua_State *L) {
  int64_t size[NM_MAXDIM];
  nm_dtype dt;
  int ndim = checkdims(L, 1, size, &dt);
  nm_newtensor(L, dt, ndim, size);
  return 1;
}

/* Same as zeros: storage is always initialised, so "empty" is never garbage. */
static int t_empty(lua_State *L) { return t_zeros(L); }

static int t_ones(lua_State *L) {
  int64_t size[NM_MAXDIM];
  nm_dtype dt;
  int ndim = checkdims(L, 1, size, &dt);
  nm_tensor_fill(nm_newtensor(L, dt, ndim, size), 1.0);
  return 1;
}

static int t_full(lua_State *L) {
  int64_t size[NM_MAXDIM];
  nm_dtype dt;
  double v = luaL_checknumber(L, 1);
  int ndim = checkdims(L, 2, size, &dt);
  nm_tensor_fill(nm_newtensor(L, dt, ndim, size), v);
  return 1;
}

static int t_eye(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_Integer m = luaL_optinteger(L, 2, n);
  nm_dtype dt = nm_optdtype(L, lua_type(L, 2) == LUA_TSTRING ? 2 : 3, NM_FLOAT32);
  if (lua_type(L, 2) == LUA_TSTRING) m = n;
  luaL_argcheck(L, n >= 0 && m >= 0, 1, "size must be non-negative");
  int64_t size[2] = {n, m};
  nm_tensor *t = nm_newtensor(L, dt, 2, size);
  for (int64_t i = 0; i < n && i < m; i++) {
    int64_t idx[2] = {i, i};
    nm_set(t, idx, 1.0);
  }
  return 1;
}

/* nm.range(a, b[, step][, dtype]): a, a+step, ..., up to b inclusive. */
static int t_range(lua_State *L) {
  double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
  double step = lua_isnumber(L, 3) ? lua_tonumber(L, 3) : 1.0;
  nm_dtype dt = nm_optdtype(L, lua_type(L, 3) == LUA_TSTRING ? 3 : 4, NM_FLOAT32);
  luaL_argcheck(L, isfinite(a), 1, "finite number expected");
  luaL_argcheck(L, isfinite(b), 2, "finite number expected");
  luaL_argcheck(L, step != 0 && isfinite(step), 3, "step must be finite and non-zero");
  double count = floor((b - a) / step + 1e-9) + 1;
  /* (b - a) / step may overflow to inf: no int64_t holds such a count. */
  if (!(count < 0x1p62)) return luaL_error(L, "range: too many elements");
  int64_t n = count > 0 ? (int64_t)count : 0;
  nm_tensor *t = nm_newtensor(L, dt, 1, &n);
  for (int64_t i = 0; i < n; i++) nm_set(t, &i, a + (double)i * step);
  return 1;
}

/* Shape of a nested table, checked to be rectangular. */
static int tableshape(lua_State *L, int idx, int depth, int64_t *size) {
  int64_t n = (int64_t)lua_rawlen(L, idx);
  if (depth >= NM_MAXDIM) luaL_error(L, "tensor: nesting deeper than 4");
  size[depth] = n;
  if (n > 0 && lua_rawgeti(L, idx, 1) == LUA_TTABLE) {
    int nd = tableshape(L, lua_gettop(L), depth + 1, size);
    lua_pop(L, 1);
    return nd;
  }
  if (n > 0) lua_pop(L, 1);
  return depth + 1;
}

static void tablefill(lua_State *L, int idx, int depth, int ndim, nm_tensor *t,
                      int64_t *pos) {
  int64_t n = (int64_t)lua_rawlen(L, idx);
  if (depth >= NM_MAXDIM) {
    luaL_error(L, "tensor: nesting deeper than 4");
    return;
  }
  if (n != t->size[depth])
    luaL_error(L, "tensor: ragged table at depth %d (%d vs %d elements)", depth + 1,
               (int)n, (int)t->size[depth]);
  for (int64_t i = 0; i < n; i++) {
    pos[depth] = i;
    int ty = lua_rawgeti(L, idx, i + 1);
    if (depth + 1 < ndim) {
      if (ty != LUA_TTABLE) luaL_error(L, "tensor: table expected at depth %d", depth + 2);
      tablefill(L, lua_gettop(L), depth + 1, ndim, t, pos);
    } else {
      int isnum;
      double v = lua_tonumberx(L, -1, &isnum);
      if (!isnum) luaL_error(L, "tensor: number expected at element %d", (int)i + 1);
      nm_set(t, pos, v);
    }
    lua_pop(L, 1);
  }
}

static int t_tensor(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  nm_dtype dt = lua_istable(L, 2) ? nm_dtype_field(L, 2, NM_FLOAT32)
                                  : nm_optdtype(L, 2, NM_FLOAT32);
  int64_t size[NM_MAXDIM] = {0, 0, 0, 0}, pos[NM_MAXDIM] = {0, 0, 0, 0};
  int ndim = tableshape(L, 1, 0, size);
  nm_tensor *t = nm_newtensor(L, dt, ndim, size);
  tablefill(L, 1, 0, ndim, t, pos);
  return 1;
}

/* nm.frombytes(s, dtype, dims...): native-endian raw values, as written
** by t:tobytes(); used by checkpoints. Allocates. */
static int t_frombytes(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  nm_dtype dt = nm_optdtype(L, 2, NM_FLOAT32);
  int64_t size[NM_MAXDIM];
  nm_dtype ignored;
  lua_settop(L, lua_gettop(L));
  int ndim = checkdims(L, 3, size, &ignored);
  int64_t n = checked_numel(L, ndim, size);
  if ((size_t)n * nm_dtype_size(dt) != len)
    return luaL_error(L, "frombytes: %I bytes do not hold %I %s values", (lua_Integer)len,
                      (lua_Integer)n, nm_dtype_name(dt));
  nm_tensor *t = nm_newtensor(L, dt, ndim, size);
  memcpy(t->data, s, len);
  return 1;
}

static int t_istensor(lua_State *L) {
  lua_pushboolean(L, totensorud(L, 1) != NULL);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Shape and access */

static int checkdimarg(lua_State *L, int arg, const nm_tensor *t) {
  lua_Integer d = luaL_checkinteger(L, arg);
  if (d < 1 || d > t->ndim) {
    lua_pushfstring(L, "dimension %d out of range for a %d-D tensor", (int)d, t->ndim);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return (int)d - 1;
}

static int m_size(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    lua_pushinteger(L, t->size[checkdimarg(L, 2, t)]);
    return 1;
  }
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) {
    lua_pushinteger(L, t->size[d]);
    lua_rawseti(L, -2, d + 1);
  }
  luaL_setmetatable(L, NM_SIZE_T);  /* prints as [3 x 4]; a plain list otherwise */
  return 1;
}

/* tostring of a t:size() table: "[3 x 4]", as the error messages write shapes. */
static int size_tostring(lua_State *L) {
  luaL_Buffer b;
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '[');
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1) luaL_addstring(&b, " x ");
    lua_rawgeti(L, 1, i);
    luaL_tolstring(L, -1, NULL);    /* whatever a user put there */
    lua_remove(L, -2);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, ']');
  luaL_pushresult(&b);
  return 1;
}

static int m_stride(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  lua_pushinteger(L, t->stride[checkdimarg(L, 2, t)]);
  return 1;
}

static int m_dim(lua_State *L) {
  lua_pushinteger(L, nm_checktensor(L, 1)->ndim);
  return 1;
}

static int m_numel(lua_State *L) {
  lua_pushinteger(L, nm_numel(nm_checktensor(L, 1)));
  return 1;
}

static int m_len(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  lua_pushinteger(L, t->ndim > 0 ? t->size[0] : 1);
  return 1;
}

static int m_dtype(lua_State *L) {
  lua_pushstring(L, nm_dtype_name(nm_checktensor(L, 1)->dtype));
  return 1;
}

static int m_iscontiguous(lua_State *L) {
  lua_pushboolean(L, nm_is_contiguous(nm_checktensor(L, 1)));
  return 1;
}

static int m_sameshape(lua_State *L) {
  lua_pushboolean(L, nm_same_shape(nm_checktensor(L, 1), nm_checktensor(L, 2)));
  return 1;
}

/* Reads ndim 1-based indices starting at arg into idx (0-based). */
static void checkindex(lua_State *L, int arg, const nm_tensor *t, int64_t *idx) {
  for (int d = 0; d < t->ndim; d++) {
    lua_Integer i = luaL_checkinteger(L, arg + d);
    if (i < 1 || i > t->size[d]) {
      char s[96];
      nm_shape_str(t, s, sizeof s);
      lua_pushfstring(L, "index %I out of range for dimension %d of %s", i, d + 1, s);
      luaL_argerror(L, arg + d, lua_tostring(L, -1));
    }
    idx[d] = i - 1;
  }
}

static int m_get(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  int64_t idx[NM_MAXDIM];
  if (lua_gettop(L) - 1 != t->ndim)
    return luaL_error(L, "get: %d indices given for a %d-D tensor", lua_gettop(L) - 1, t->ndim);
  checkindex(L, 2, t, idx);
  lua_pushnumber(L, nm_get(t, idx));
  return 1;
}

static int m_set(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  int64_t idx[NM_MAXDIM];
  if (lua_gettop(L) - 2 != t->ndim)
    return luaL_error(L, "set: %d indices given for a %d-D tensor", lua_gettop(L) - 2, t->ndim);
  checkindex(L, 2, t, idx);
  nm_set(t, idx, luaL_checknumber(L, 2 + t->ndim));
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Views: share storage, allocate only a header */

static int m_narrow(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  int d = checkdimarg(L, 2, t);
  lua_Integer first = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
  /* Written so that no sum can overflow, whatever first and len are. */
  if (first < 1 || len < 0 || first - 1 > t->size[d] || len > t->size[d] - (first - 1))
    return luaL_error(L, "narrow: %I elements from index %I out of bounds for dimension %d "
                      "of size %I", len, first, d + 1, (lua_Integer)t->size[d]);
  nm_view_narrow(nm_pushview(L, 1), d, first - 1, len);
  return 1;
}

static int m_select(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  int d = checkdimarg(L, 2, t);
  lua_Integer i = luaL_checkinteger(L, 3);
  if (i < 1 || i > t->size[d])
    return luaL_error(L, "select: index %I out of range for dimension %d of size %I", i,
                      d + 1, (lua_Integer)t->size[d]);
  nm_view_select(nm_pushview(L, 1), d, i - 1);
  return 1;
}

static int rowcol(lua_State *L, int d, const char *name) {
  nm_tensor *t = nm_checktensor(L, 1);
  nm_check_dim(L, 1, t, 2);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || i > t->size[d])
    return luaL_error(L, "%s: index %I out of range 1..%I", name, i, (lua_Integer)t->size[d]);
  nm_view_select(nm_pushview(L, 1), d, i - 1);
  return 1;
}

static int m_row(lua_State *L) { return rowcol(L, 0, "row"); }
static int m_col(lua_State *L) { return rowcol(L, 1, "col"); }

static int m_t(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  nm_check_dim(L, 1, t, 2);
  nm_view_transpose(nm_pushview(L, 1), 0, 1);
  return 1;
}

static int m_transpose(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  int d1 = checkdimarg(L, 2, t), d2 = checkdimarg(L, 3, t);
  nm_view_transpose(nm_pushview(L, 1), d1, d2);
  return 1;
}

/* t:view(dims...): same storage with a new shape; t must be contiguous. */
static int m_view(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  int64_t size[NM_MAXDIM];
  nm_dtype ignored;
  int ndim = checkdims(L, 2, size, &ignored);
  int64_t n = checked_numel(L, ndim, size);
  if (n != nm_numel(t)) {
    char s[96];
    nm_shape_str(t, s, sizeof s);
    return luaL_error(L, "view: %I elements requested, tensor %s has %I", (lua_Integer)n, s,
                      (lua_Integer)nm_numel(t));
  }
  if (!nm_is_contiguous(t))
    return luaL_error(L, "view: tensor is not contiguous (use reshape or contiguous)");
  nm_tensor *v = nm_pushview(L, 1);
  void *data = v->data;
  nm_init_contiguous(v, t->dtype, ndim, size);
  v->data = data;
  return 1;
}

static int m_clone(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  nm_tensor *c = nm_newtensor_like(L, t, t->dtype);
  nm_tensor_copy(c, t);
  return 1;
}

/* t:reshape(dims...): a view when t is contiguous, else a copy. */
static int m_reshape(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  if (nm_is_contiguous(t)) return m_view(L);
  lua_pushcfunction(L, m_clone);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  lua_replace(L, 1);
  return m_view(L);
}

static int m_contiguous(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  if (nm_is_contiguous(t)) {
    lua_settop(L, 1);
    return 1;
  }
  return m_clone(L);
}

static int m_cast(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  nm_dtype dt = nm_optdtype(L, 2, NM_FLOAT32);
  nm_tensor *c = nm_newtensor_like(L, t, dt);
  nm_tensor_copy(c, t);
  return 1;
}

static int m_float(lua_State *L) {
  lua_settop(L, 1);
  lua_pushliteral(L, "float32");
  return m_cast(L);
}

static int m_double(lua_State *L) {
  lua_settop(L, 1);
  lua_pushliteral(L, "float64");
  return m_cast(L);
}

/* dst:copy(src): same number of elements, any shapes/strides, casts. */
static int m_copy(lua_State *L) {
  nm_tensor *dst = nm_checktensor(L, 1), *src = nm_checktensor(L, 2);
  if (nm_numel(dst) != nm_numel(src)) nm_check_same_shape(L, 2, dst, src);
  /* An overlapping source (a shifted or transposed view of dst) would be
  ** overwritten before it is read: copy it aside first (allocates only
  ** then). The very same view copies onto itself harmlessly. */
  if (nm_overlap(dst, src) && !(dst->data == src->data && nm_same_shape(dst, src) &&
                                memcmp(dst->stride, src->stride, sizeof dst->stride) == 0)) {
    nm_tensor *tmp = nm_newtensor_like(L, src, src->dtype);
    nm_tensor_copy(tmp, src);
    src = tmp;
  }
  int status = nm_copy(dst, src);
  if (status != NM_OK) return nm_status_error(L, status, "copy");
  lua_settop(L, 1);
  return 1;
}

static int m_fill(lua_State *L) {
  int status = nm_fill(nm_checktensor(L, 1), luaL_checknumber(L, 2));
  if (status != NM_OK) return nm_status_error(L, status, "fill");
  lua_settop(L, 1);
  return 1;
}

static int m_zero(lua_State *L) {
  int status = nm_fill(nm_checktensor(L, 1), 0.0);
  if (status != NM_OK) return nm_status_error(L, status, "zero");
  lua_settop(L, 1);
  return 1;
}

static void pushtable(lua_State *L, const nm_tensor *t, int depth, int64_t *idx) {
  if (t->ndim == 0) {
    lua_pushnumber(L, nm_get(t, idx));
    return;
  }
  if (depth >= NM_MAXDIM) {         /* cannot happen: ndim <= NM_MAXDIM */
    luaL_error(L, "totable: more than 4 dimensions");
    return;
  }
  lua_createtable(L, t->size[depth] < INT32_MAX ? (int)t->size[depth] : 0, 0);
  for (int64_t i = 0; i < t->size[depth]; i++) {
    idx[depth] = i;
    if (depth + 1 == t->ndim) lua_pushnumber(L, nm_get(t, idx));
    else pushtable(L, t, depth + 1, idx);
    lua_rawseti(L, -2, i + 1);
  }
}

/* An empty tensor's table holds no number but one table per index of
** the sizes before its first zero: refused past this many. */
#define TOTABLE_MAX_EMPTY (INT64_C(1) << 24)

static int m_totable(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  int64_t idx[NM_MAXDIM] = {0, 0, 0, 0}, tables = 1;
  for (int d = 0; d < t->ndim - 1 && t->size[d] > 0 && nm_numel(t) == 0; d++) {
    tables *= t->size[d];      /* < NM_MAX_SPAN: no overflow */
    if (tables > TOTABLE_MAX_EMPTY) {
      char s[96];
      return luaL_error(L, "totable: the empty tensor %s would become %I nested empty "
                        "tables (at most %I)", nm_shape_str(t, s, sizeof s),
                        (lua_Integer)tables, (lua_Integer)TOTABLE_MAX_EMPTY);
    }
  }
  luaL_checkstack(L, NM_MAXDIM + 4, "totable");
  pushtable(L, t, 0, idx);
  return 1;
}

/* t:tobytes(): the values in row-major order, native endianness. */
static int m_tobytes(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  size_t nbytes = (size_t)nm_numel(t) * nm_dtype_size(t->dtype);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, nbytes);
  nm_tensor dst;
  nm_init_contiguous(&dst, t->dtype, t->ndim, t->size);
  dst.data = p;
  nm_tensor_copy(&dst, t);
  luaL_pushresultsize(&b, nbytes);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Printing, in the manner of Torch7: one format for the whole tensor, so the
** columns line up -- integers when every value is one, else four decimals
** under a shared "1e-05 *" scale when all magnitudes are far from 1, or
** scientific notation when they span more than four decades. Rows and
** columns past PRINT_MAX and 2-D blocks past PRINT_BLOCKS are elided; the
** footer gives the size. NaN prints as nan (never -nan), infinities as
** inf and -inf. */

#define PRINT_MAX 12     /* rows/cols shown before eliding the middle */
#define PRINT_BLOCKS 6   /* 2-D blocks of a 3-D/4-D tensor shown likewise */

enum { FMT_INT, FMT_FIXED, FMT_SCI };
enum { PASS_STATS, PASS_WIDTH, PASS_PRINT };

typedef struct {
  int pass, mode, width;
  int any, all_int;               /* PASS_STATS: a finite value seen; all integers */
  double maxabs, minabs;          /* over finite nonzero values */
  double scale;
  luaL_Buffer *b;
} printfmt;

static void format_cell(char *buf, size_t len, const printfmt *f, double v) {
  if (isnan(v)) snprintf(buf, len, "nan");
  else if (isinf(v)) snprintf(buf, len, v < 0 ? "-inf" : "inf");
  else if (f->mode == FMT_INT) snprintf(buf, len, "%.0f", v + 0.0);   /* +0.0: no "-0" */
  else if (f->mode == FMT_SCI) snprintf(buf, len, "%.4e", v);
  else snprintf(buf, len, "%.4f", v / f->scale + 0.0);
}

static void cell(printfmt *f, double v) {
  char s[64];
  if (f->pass == PASS_STATS) {
    if (!isfinite(v)) return;
    if (v != floor(v) || fabs(v) >= 1e15) f->all_int = 0;
    double a = fabs(v);
    if (a > 0) {
      if (!f->any || a > f->maxabs) f->maxabs = a;
      if (!f->any || a < f->minabs) f->minabs = a;
      f->any = 1;
    }
    return;
  }
  format_cell(s, sizeof s, f, v);
  int n = (int)strlen(s);
  if (f->pass == PASS_WIDTH) {
    if (n > f->width) f->width = n;
    return;
  }
  char padded[96];
  snprintf(padded, sizeof padded, " %*s", f->width, s);
  luaL_addstring(f->b, padded);
}

static void text(printfmt *f, const char *s) {
  if (f->pass == PASS_PRINT) luaL_addstring(f->b, s);
}

static void visit_row(printfmt *f, const nm_tensor *t, int64_t *idx, int dim) {
  int64_t n = t->size[dim];
  for (int64_t j = 0; j < n; j++) {
    if (n > PRINT_MAX && j == PRINT_MAX / 2) {
      text(f, " ...");
      j = n - PRINT_MAX / 2;
    }
    idx[dim] = j;
    cell(f, nm_get(t, idx));
  }
  text(f, "\n");
}

/* Every shown value, in print order; structure only in PASS_PRINT. */
static void visit(printfmt *f, const nm_tensor *t) {
  int64_t idx[NM_MAXDIM] = {0, 0, 0, 0};
  char s[48];
  if (t->ndim == 0) {
    cell(f, nm_get(t, idx));
    text(f, "\n");
    return;
  }
  if (t->ndim == 1) {
    visit_row(f, t, idx, 0);
    return;
  }
  /* Leading dims become "(i,j,.,.)" blocks of 2-D slices, as Torch does. */
  int64_t outer = 1;
  for (int d = 0; d < t->ndim - 2; d++) outer *= t->size[d];
  if (nm_numel(t) == 0) return;
  for (int64_t o = 0; o < outer; o++) {
    if (outer > PRINT_BLOCKS && o == PRINT_BLOCKS / 2) {
      text(f, "...\n");
      o = outer - PRINT_BLOCKS / 2;
    }
    int64_t rem = o;
    for (int d = t->ndim - 3; d >= 0; d--) {
      idx[d] = rem % t->size[d];
      rem /= t->size[d];
    }
    if (t->ndim > 2) {
      text(f, "(");
      for (int d = 0; d < t->ndim - 2; d++) {
        snprintf(s, sizeof s, "%lld,", (long long)idx[d] + 1);
        text(f, s);
      }
      text(f, ".,.)\n");
    }
    int64_t rows = t->size[t->ndim - 2];
    for (int64_t i = 0; i < rows; i++) {
      if (rows > PRINT_MAX && i == PRINT_MAX / 2) {
        text(f, " ...\n");
        i = rows - PRINT_MAX / 2;
      }
      idx[t->ndim - 2] = i;
      visit_row(f, t, idx, t->ndim - 1);
    }
  }
}

/* Chooses the one format of the tensor from its shown values. */
static void choose_format(printfmt *f) {
  f->mode = FMT_FIXED;
  f->scale = 1;
  if (!f->any || (f->all_int && f->maxabs < 1e9)) {   /* zeros, integers */
    f->mode = f->all_int ? FMT_INT : FMT_FIXED;
    return;
  }
  int emax = (int)floor(log10(f->maxabs)), emin = (int)floor(log10(f->minabs));
  if (emax - emin > 4) f->mode = FMT_SCI;
  else if (emax >= 3 || emax <= -3) f->scale = pow(10.0, emax);
}

static int m_tostring(lua_State *L) {
  nm_ltensor *lt = live(L, 1, (nm_ltensor *)luaL_checkudata(L, 1, NM_TENSOR_T));
  nm_tensor *t = &lt->t;
  const char *type = t->dtype == NM_FLOAT64 ? "DoubleTensor" : "FloatTensor";
  if (t->data == NULL) {
    lua_pushfstring(L, "[neuromic.%s (closed)]", type);
    return 1;
  }
  luaL_Buffer b;
  printfmt f;
  char s[48];
  memset(&f, 0, sizeof f);
  f.all_int = 1;
  f.pass = PASS_STATS;
  visit(&f, t);
  choose_format(&f);
  f.pass = PASS_WIDTH;
  visit(&f, t);
  luaL_buffinit(L, &b);
  f.b = &b;
  f.pass = PASS_PRINT;
  if (f.scale != 1) {
    snprintf(s, sizeof s, "%.0e *\n", f.scale);
    luaL_addstring(&b, s);
  }
  visit(&f, t);
  luaL_addstring(&b, "[neuromic.");
  luaL_addstring(&b, type);
  luaL_addstring(&b, " of size ");
  for (int d = 0; d < t->ndim; d++) {
    snprintf(s, sizeof s, d ? "x%lld" : "%lld", (long long)t->size[d]);
    luaL_addstring(&b, s);
  }
  if (t->ndim == 0) luaL_addstring(&b, "scalar");
  luaL_addchar(&b, ']');
  luaL_pushresult(&b);
  return 1;
}

/* __gc and __close: drop the reference to the storage so it is collected
** as soon as no view uses it; idempotent. */
static int m_release(lua_State *L) {
  nm_ltensor *lt = (nm_ltensor *)luaL_checkudata(L, 1, NM_TENSOR_T);
  lt->t.data = NULL;
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int m_isclosed(lua_State *L) {
  nm_ltensor *lt = live(L, 1, (nm_ltensor *)luaL_checkudata(L, 1, NM_TENSOR_T));
  lua_pushboolean(L, lt->t.data == NULL);
  return 1;
}

/* ------------------------------------------------------------- gather */

/* Shape text of t for error messages ("[3 x 4]"), pushed on the stack. */
static const char *pushshape(lua_State *L, const nm_tensor *t) {
  char buf[96];
  nm_shape_str(t, buf, sizeof buf);
  return lua_pushstring(L, buf);
}

/* One index (1-based) from a list table or a 1-D tensor at position pos. */
static lua_Integer index_at(lua_State *L, int arg, const nm_tensor *it, lua_Integer pos) {
  if (it != NULL) {
    int64_t i = pos - 1;
    double v = nm_get(it, &i);
    if (!(v == floor(v) && fabs(v) < 9.0e15)) {
      lua_pushfstring(L, "index at position %I is not an integer", pos);
      return luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    return (lua_Integer)v;
  }
  int isint;
  lua_geti(L, arg, pos);
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (!isint) {
    lua_pushfstring(L, "index at position %I is not an integer", pos);
    return luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return v;
}

int64_t nm_gather_check(lua_State *L, int bi, int ii, lua_Integer first, nm_tensor **it) {
  nm_tensor *B = nm_checktensor(L, bi);
  nm_tensor *X = nm_checktensor(L, bi + 1);
  lua_Integer len;
  *it = NULL;
  if (lua_istable(L, ii)) len = luaL_len(L, ii);
  else {
    *it = nm_totensor(L, ii);
    if (*it == NULL || (*it)->ndim != 1)
      luaL_typeerror(L, ii, "list or 1-D tensor of row indices");
    len = (*it)->size[0];
  }
  if (B->ndim < 1 || X->ndim < 1) {
    lua_pushfstring(L, "rows of %s from %s: need tensors with at least one dimension",
                    pushshape(L, B), pushshape(L, X));
    luaL_argerror(L, bi + 1, lua_tostring(L, -1));
  }
  int64_t brow = 1, xrow = 1;
  for (int d = 1; d < B->ndim; d++) brow *= B->size[d];
  for (int d = 1; d < X->ndim; d++) xrow *= X->size[d];
  if (brow != xrow) {
    lua_pushfstring(L, "row size mismatch, %s vs %s", pushshape(L, B), pushshape(L, X));
    luaL_argerror(L, bi + 1, lua_tostring(L, -1));
  }
  {
    /* Rows are copied one by one: B must not hold rows still to be read. */
    const int args[2] = {bi, bi + 1};
    static const char *const names[2] = {"B", "X"};
    const nm_tensor *ts[2] = {B, X};
    nm_check_disjoint(L, 1, 2, args, names, ts);
  }
  int64_t rows = B->size[0];
  /* Written so that no sum can overflow, whatever first is. */
  if (first < 1 || first - 1 > len || rows > len - (first - 1)) {
    lua_pushfstring(L, "%I rows from position %I need more than the %I indices of the list",
                    (lua_Integer)rows, first, len);
    luaL_argerror(L, ii, lua_tostring(L, -1));
  }
  return rows;
}

int64_t nm_gather_index(lua_State *L, int ii, const nm_tensor *it, lua_Integer pos,
                        int64_t nrows) {
  lua_Integer j = index_at(L, ii, it, pos);
  if (j < 1 || j > nrows) {
    lua_pushfstring(L, "index %I at position %I out of range [1, %I]", j, pos,
                    (lua_Integer)nrows);
    luaL_argerror(L, ii, lua_tostring(L, -1));
  }
  return j - 1;
}

/* B:index_rows(X, idx [, first]) -> B
** Row i of B (along dim 1) = row idx[first + i - 1] of X, for every row of
** B; idx a list or 1-D tensor of 1-based row numbers, first default 1.
** Rows must hold the same number of elements (shapes may differ: a
** [B x 784] buffer takes rows of an [N x 28 x 28] tensor); dtypes are
** converted. Allocates nothing. */
static int m_index_rows(lua_State *L) {
  nm_tensor *it;
  lua_Integer first = luaL_optinteger(L, 4, 1);
  int64_t rows = nm_gather_check(L, 1, 3, first, &it);
  nm_tensor *B = nm_checktensor(L, 1), *X = nm_checktensor(L, 2);
  /* Indices are read and checked 512 at a time, then those rows copied
  ** (on the thread pool when there are many: nm_copy_rows). */
  int64_t idx[512];
  for (int64_t i0 = 0; i0 < rows; i0 += 512) {
    int64_t count = rows - i0 < 512 ? rows - i0 : 512;
    for (int64_t i = 0; i < count; i++)
      idx[i] = nm_gather_index(L, 3, it, first + i0 + i, X->size[0]);
    /* Reading a list index may run an __index metamethod. */
    if (B->data == NULL || X->data == NULL)
      return luaL_error(L, "index_rows: a tensor was closed during the call");
    nm_copy_rows(B, i0, X, idx, count);
  }
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Indexing as in Torch7: t[i] is row i (a view) of a 2-D or larger tensor
** and element i of a 1-D one, so t[i][j] is an element; t[i] = x fills row
** i with a number or copies a tensor of as many elements into it. Any
** other key reads the methods (upvalue 1). */

static int64_t checkrowindex(lua_State *L, const nm_tensor *t, const char *what) {
  lua_Integer i = 0;
  if (!lua_isinteger(L, 2)) {
    lua_Number x = lua_tonumber(L, 2);
    if (x != floor(x) || !lua_numbertointeger(x, &i))
      luaL_error(L, "%s: index %s is not an integer", what, lua_tostring(L, 2));
  }
  else i = lua_tointeger(L, 2);
  char s[96];
  nm_shape_str(t, s, sizeof s);
  if (t->ndim == 0) luaL_error(L, "%s: a %s tensor has no rows", what, s);
  if (i < 1 || i > t->size[0])
    luaL_error(L, "%s: index %I out of range for dimension 1 of %s", what, i, s);
  return (int64_t)i - 1;
}

static int m_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TNUMBER) {
    lua_settop(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
  }
  nm_tensor *t = nm_checktensor(L, 1);
  int64_t i = checkrowindex(L, t, "index");
  if (t->ndim == 1) {
    int64_t idx[NM_MAXDIM] = {i, 0, 0, 0};
    lua_pushnumber(L, nm_get(t, idx));
  }
  else nm_view_select(nm_pushview(L, 1), 0, i);
  return 1;
}

static int m_newindex(lua_State *L) {
  if (lua_type(L, 2) != LUA_TNUMBER)
    return luaL_error(L, "cannot set field '%s' of a tensor (only t[i] = x)",
                      luaL_tolstring(L, 2, NULL));
  nm_tensor *t = nm_checktensor(L, 1);
  int64_t i = checkrowindex(L, t, "newindex");
  if (t->ndim == 1) {
    int64_t idx[NM_MAXDIM] = {i, 0, 0, 0};
    nm_set(t, idx, luaL_checknumber(L, 3));
    return 0;
  }
  if (lua_type(L, 3) != LUA_TNUMBER && totensorud(L, 3) == NULL)
    return luaL_error(L, "newindex: t[%I] = x needs a number or a tensor, got %s",
                      (lua_Integer)i + 1, luaL_typename(L, 3));
  nm_tensor *row = nm_pushview(L, 1);
  nm_view_select(row, 0, i);
  int r = lua_gettop(L);
  if (lua_type(L, 3) == LUA_TNUMBER) {
    int status = nm_fill(row, lua_tonumber(L, 3));
    if (status != NM_OK) return nm_status_error(L, status, "newindex");
    return 0;
  }
  lua_pushcfunction(L, m_copy);     /* same rules and messages as row:copy(x) */
  lua_pushvalue(L, r);
  lua_pushvalue(L, 3);
  lua_call(L, 2, 0);
  return 0;
}

/* ---------------------------------------------------------------------- */

static const luaL_Reg tensor_funcs[] = {
  {"zeros", t_zeros},     {"ones", t_ones},         {"full", t_full},
  {"empty", t_empty},     {"eye", t_eye},           {"range", t_range},
  {"tensor", t_tensor},   {"frombytes", t_frombytes}, {"is_tensor", t_istensor},
  {NULL, NULL}
};

static const luaL_Reg tensor_meth[] = {
  {"size", m_size},       {"stride", m_stride},     {"dim", m_dim},
  {"numel", m_numel},     {"dtype", m_dtype},       {"is_contiguous", m_iscontiguous},
  {"same_shape", m_sameshape},
  {"get", m_get},         {"set", m_set},
  {"narrow", m_narrow},   {"select", m_select},     {"row", m_row},
  {"col", m_col},         {"t", m_t},               {"transpose", m_transpose},
  {"view", m_view},       {"reshape", m_reshape},   {"contiguous", m_contiguous},
  {"clone", m_clone},     {"cast", m_cast},         {"float", m_float},
  {"double", m_double},   {"copy", m_copy},         {"fill", m_fill},
  {"zero", m_zero},       {"totable", m_totable},   {"tobytes", m_tobytes},
  {"close", m_release},   {"is_closed", m_isclosed},
  {"index_rows", m_index_rows},
  {NULL, NULL}
};

static const luaL_Reg tensor_metameth[] = {
  {"__tostring", m_tostring}, {"__len", m_len},
  {"__gc", m_release},        {"__close", m_release},
  {"__newindex", m_newindex}, {"__index", NULL},
  {"__methods", NULL},        {NULL, NULL}
};

void nm_open_tensor(lua_State *L, int module, int methods) {
  luaL_newmetatable(L, NM_SIZE_T);
  lua_pushcfunction(L, size_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, NM_TENSOR_T);
  luaL_setfuncs(L, tensor_metameth, 0);
  lua_pushvalue(L, methods);
  lua_pushcclosure(L, m_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, methods);        /* the methods, for the REPL's completion */
  lua_setfield(L, -2, "__methods");
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, tensor_meth, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, tensor_funcs, 0);
  lua_pop(L, 1);
}
