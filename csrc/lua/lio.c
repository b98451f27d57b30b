/*
** lio.c: nm.load_idx / nm.save_idx / nm.load_npy / nm.save_npy, the Lua
** face of nm_io (IDX, optionally gzip-compressed, and NumPy .npy).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lnm.h"
#include "nm_io.h"

/* An open reader lives in a userdata whose __gc closes the file, so an
** error between open and close (a failed allocation) leaks nothing. */
#define READER_T "neuromic.FileReader"

typedef int (*open_fn)(nm_reader *r, const char *path, char *err, size_t errlen);

static int reader_release(lua_State *L) {
  nm_reader_close((nm_reader *)luaL_checkudata(L, 1, READER_T));
  return 0;
}

/* Element type names accepted by the writers. */
static const struct { const char *name; nm_io_type type; } type_names[] = {
  {"uint8", NM_IO_U8},   {"ubyte", NM_IO_U8},   {"int8", NM_IO_I8},
  {"byte", NM_IO_I8},    {"uint16", NM_IO_U16}, {"int16", NM_IO_I16},
  {"short", NM_IO_I16},  {"uint32", NM_IO_U32}, {"int32", NM_IO_I32},
  {"int", NM_IO_I32},    {"uint64", NM_IO_U64}, {"int64", NM_IO_I64},
  {"float32", NM_IO_F32}, {"float", NM_IO_F32}, {"float64", NM_IO_F64},
  {"double", NM_IO_F64}
};

static nm_io_type checkiotype(lua_State *L, int arg, const nm_tensor *t) {
  if (lua_isnoneornil(L, arg))
    return t->dtype == NM_FLOAT32 ? NM_IO_F32 : NM_IO_F64;
  const char *s = luaL_checkstring(L, arg);
  for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
    if (strcmp(s, type_names[i].name) == 0)
      return type_names[i].type;
  lua_pushfstring(L, "unknown element type '%s' (uint8, int8, int16, int32, "
                  "int64, float32, float64, ...)", s);
  return (nm_io_type)luaL_argerror(L, arg, lua_tostring(L, -1));
}

const char *nm_checkpath(lua_State *L, int arg) {
  size_t len;
  const char *path = luaL_checklstring(L, arg, &len);
  if (strlen(path) != len) {
    lua_pushfstring(L, "path contains a NUL byte (at byte %d)", (int)strlen(path) + 1);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return path;
}

const char *nm_optpath(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NULL : nm_checkpath(L, arg);
}

/* The most bytes a loaded tensor may take: opts.max_bytes at arg, else
** the environment variable NEUROMIC_LOAD_MAX_BYTES, else
** NM_IO_DEFAULT_MAX_BYTES. */
static int64_t load_limit(lua_State *L, int arg) {
  if (lua_istable(L, arg)) {
    lua_getfield(L, arg, "max_bytes");
    if (!lua_isnil(L, -1)) {
      int ok;
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      if (!ok || v < 0) luaL_argerror(L, arg, "max_bytes must be a non-negative integer");
      lua_pop(L, 1);
      return (int64_t)v;
    }
    lua_pop(L, 1);
  }
  const char *env = getenv("NEUROMIC_LOAD_MAX_BYTES");
  if (env != NULL && *env != '\0') {
    char *end;
    errno = 0;
    long long v = strtoll(env, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0)
      luaL_error(L, "NEUROMIC_LOAD_MAX_BYTES='%s' is not a byte count", env);
    return (int64_t)v;
  }
  return NM_IO_DEFAULT_MAX_BYTES;
}

/* Shared body of load_idx and load_npy: (path[, dtype][, opts]) ->
** tensor. The default dtype is the one that holds the file's values
** exactly. */
static int load(lua_State *L, open_fn opener, const char *name) {
  const char *path = nm_checkpath(L, 1);
  int opts = lua_istable(L, 2) ? 2 : 3, given = 0;
  nm_dtype dt = NM_FLOAT32;
  if (!lua_isnoneornil(L, opts) && !lua_istable(L, opts))
    luaL_argerror(L, opts, "options table expected");
  if (opts == 3 && !lua_isnoneornil(L, 2)) {
    dt = nm_optdtype(L, 2, NM_FLOAT32);
    given = 1;
  } else if (lua_istable(L, opts)) {
    given = lua_getfield(L, opts, "dtype") != LUA_TNIL;
    lua_pop(L, 1);
    dt = nm_dtype_field(L, opts, NM_FLOAT32);
  }
  int64_t limit = load_limit(L, opts);
  char err[NM_IO_ERRLEN];
  nm_reader *r = (nm_reader *)lua_newuserdatauv(L, sizeof(nm_reader), 0);
  nm_reader_init(r);
  luaL_setmetatable(L, READER_T);
  int status = opener(r, path, err, sizeof err);
  if (status == NM_EINTR)
    return nm_status_error(L, status, name);
  if (status != NM_OK)
    return luaL_error(L, "%s: %s", name, err);
  if (!given)
    dt = nm_io_exact_dtype(r->type);
  if (r->count > limit / (int64_t)nm_dtype_size(dt)) {
    char dims[160] = "";
    for (int d = 0, used = 0; d < r->ndim && used < (int)sizeof dims; d++)
      used += snprintf(dims + used, sizeof dims - (size_t)used, d ? " x %lld" : "%lld",
                       (long long)r->dims[d]);
    return luaL_error(L, "%s: %s: the header declares %s %s elements, %I bytes as %s, over "
                      "the limit of %I bytes (raise it with {max_bytes = n} or the "
                      "environment variable NEUROMIC_LOAD_MAX_BYTES)", name, path, dims,
                      nm_io_type_name(r->type), (lua_Integer)(r->count * (int64_t)nm_dtype_size(dt)),
                      nm_dtype_name(dt), (lua_Integer)limit);
  }
  /* A pipe or a gzip file: read before allocating, so only data that
  ** exists costs memory. */
  status = nm_reader_load(r, err, sizeof err);
  if (status == NM_OK) {
    nm_tensor *t = nm_newtensor(L, dt, r->ndim, r->dims);
    status = nm_reader_read(r, t->data, dt, err, sizeof err);
  }
  nm_reader_close(r);
  if (status == NM_EINTR)
    return nm_status_error(L, status, name);
  if (status != NM_OK)
    return luaL_error(L, "%s: %s", name, err);
  return 1;
}

/* nm.load_idx(path[, dtype][, opts]): the IDX file (plain or gzip) as a
** tensor of its shape (MNIST images: N x rows x cols), values as stored.
** dtype (or opts.dtype) defaults to float32 for byte, short and float
** files, float64 for int and double; opts.max_bytes caps the tensor's
** size. Allocates. */
static int io_load_idx(lua_State *L) {
  return load(L, nm_idx_open, "load_idx");
}

/* nm.load_npy(path[, dtype][, opts]): the .npy array as a tensor; dtype
** defaults to float32 for f4 and 1- or 2-byte integers, float64
** otherwise; opts as for load_idx. Allocates. */
static int io_load_npy(lua_State *L) {
  return load(L, nm_npy_open, "load_npy");
}

typedef int (*write_fn)(const char *path, const nm_tensor *t, nm_io_type type,
                        char *err, size_t errlen);

static int save(lua_State *L, write_fn writer, const char *name) {
  const char *path = nm_checkpath(L, 1);
  nm_tensor *t = nm_checktensor(L, 2);
  nm_io_type type = checkiotype(L, 3, t);
  char err[NM_IO_ERRLEN];
  int status = writer(path, t, type, err, sizeof err);
  if (status == NM_EINTR)
    return nm_status_error(L, status, name);
  if (status != NM_OK)
    return luaL_error(L, "%s: %s", name, err);
  return 0;
}

/* nm.save_idx(path, t[, type]): writes t as IDX, element type "ubyte",
** "byte", "short", "int", "float" or "double" (default: t's dtype);
** gzip-compressed when path ends in ".gz". Integer types require integral
** values in range. Allocates nothing in Lua. */
static int io_save_idx(lua_State *L) {
  return save(L, nm_idx_write, "save_idx");
}

/* nm.save_npy(path, t[, type]): writes t as .npy 1.0 (C order), element
** type "float32"/"float64" (default: t's dtype) or an integer type such as
** "uint8", "int32", "int64". */
static int io_save_npy(lua_State *L) {
  return save(L, nm_npy_write, "save_npy");
}

static const luaL_Reg io_funcs[] = {
  {"load_idx", io_load_idx}, {"save_idx", io_save_idx},
  {"load_npy", io_load_npy}, {"save_npy", io_save_npy},
  {NULL, NULL}
};

static const luaL_Reg reader_metameth[] = {
  {"__gc", reader_release}, {"__close", reader_release}, {NULL, NULL}
};

void nm_open_io(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newmetatable(L, READER_T);
  luaL_setfuncs(L, reader_metameth, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, io_funcs, 0);
  lua_pop(L, 1);
}
