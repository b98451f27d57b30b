/*
** lio.c: nm.load_idx / nm.save_idx / nm.load_npy / nm.save_npy, the Lua
** face of nm_io (IDX, optionally gzip-compressed, and NumPy .npy).
*/
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

/* Shared body of load_idx and load_npy: (path[, dtype]) -> tensor. The
** default dtype is the one that holds the file's values exactly. */
static int load(lua_State *L, open_fn opener, const char *name) {
  const char *path = luaL_checkstring(L, 1);
  int given = !lua_isnoneornil(L, 2);
  nm_dtype dt = nm_optdtype(L, 2, NM_FLOAT32);
  char err[NM_IO_ERRLEN];
  nm_reader *r = (nm_reader *)lua_newuserdatauv(L, sizeof(nm_reader), 0);
  nm_reader_init(r);
  luaL_setmetatable(L, READER_T);
  int status = opener(r, path, err, sizeof err);
  if (status != NM_OK)
    return luaL_error(L, "%s: %s", name, err);
  if (!given)
    dt = nm_io_exact_dtype(r->type);
  nm_tensor *t = nm_newtensor(L, dt, r->ndim, r->dims);
  status = nm_reader_read(r, t->data, dt, err, sizeof err);
  nm_reader_close(r);
  if (status == NM_EINTR)
    return nm_status_error(L, status, name);
  if (status != NM_OK)
    return luaL_error(L, "%s: %s", name, err);
  return 1;
}

/* nm.load_idx(path[, dtype]): the IDX file (plain or gzip) as a tensor of
** its shape (MNIST images: N x rows x cols), values as stored. dtype
** defaults to float32 for byte, short and float files, float64 for int
** and double. Allocates. */
static int io_load_idx(lua_State *L) {
  return load(L, nm_idx_open, "load_idx");
}

/* nm.load_npy(path[, dtype]): the .npy array as a tensor; dtype defaults
** to float32 for f4 and 1- or 2-byte integers, float64 otherwise.
** Allocates. */
static int io_load_npy(lua_State *L) {
  return load(L, nm_npy_open, "load_npy");
}

typedef int (*write_fn)(const char *path, const nm_tensor *t, nm_io_type type,
                        char *err, size_t errlen);

static int save(lua_State *L, write_fn writer, const char *name) {
  const char *path = luaL_checkstring(L, 1);
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
