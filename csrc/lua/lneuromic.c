/*
** lneuromic.c: luaopen_neuromic, the module opener; gathers the
** submodules of the binding into one table. The module's top is the
** tensor library (constructors, Tensor, Generator, io, products, linear
** algebra, hashes, version, build); OS functions are in nm.sys (lsys.c)
** and the model kernels of csrc/models in nm.kernels.
*/
#include "lnm.h"


/* Registers the table at idx, and each table-valued field of it, in
** package.loaded as NAME and NAME.FIELD, so that an argument error of a
** function in nm.sys or nm.kernels.nk names it ('neuromic.kernels.nk.sigmoid')
** as luaL_argerror names the module's top-level functions, instead of '?'. */
static void register_names(lua_State *L, int idx, const char *name, int depth) {
  idx = lua_absindex(L, idx);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  if (depth == 0) return;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
      lua_pushfstring(L, "%s.%s", name, lua_tostring(L, -2));
      register_names(L, -2, lua_tostring(L, -1), depth - 1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}


int luaopen_neuromic(lua_State *L) {
  lua_newtable(L);                      /* module */
  int module = lua_gettop(L);
  lua_newtable(L);                      /* Tensor methods */
  int methods = lua_gettop(L);
  nm_open_tensor(L, module, methods);   /* first: creates the metatable */
  nm_open_tensor_math(L, module, methods);
  nm_open_tensor_linalg(L, module, methods);
  nm_open_random(L, module, methods);
  nm_open_io(L, module, methods);
  nm_open_sys(L, module, methods);
  nm_open_synth(L, module, methods);
  nm_open_gather(L, module, methods);
  lua_newtable(L);                      /* nm.kernels: the model kernels */
  int kernels = lua_gettop(L);
  nm_open_nk(L, kernels, methods);
  nm_open_plastic(L, kernels, methods);
  nm_open_mlp(L, kernels, methods);
  nm_open_bmvr(L, kernels, methods);
  nm_open_microcircuit(L, kernels, methods);
  nm_open_meta(L, kernels, methods);
  nm_open_folded(L, kernels, methods);
  nm_open_kernel(L, kernels, methods);
  register_names(L, kernels, "neuromic.kernels", 1);
  lua_setfield(L, module, "kernels");
  lua_getfield(L, module, "sys");
  register_names(L, -1, "neuromic.sys", 0);
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  lua_setfield(L, module, "Tensor");
  lua_pushstring(L, nm_version);
  lua_setfield(L, module, "version");
  /* How this build was compiled: the rule compiler builds kernels alike. */
  lua_createtable(L, 0, 5);
  lua_pushstring(L, nm_build_cc);
  lua_setfield(L, -2, "cc");
  lua_pushstring(L, nm_build_blas_cflags);
  lua_setfield(L, -2, "blas_cflags");
  lua_pushstring(L, nm_build_blas_libs);
  lua_setfield(L, -2, "blas_libs");
  lua_pushstring(L, nm_vmath_source);
  lua_setfield(L, -2, "vmath");
  lua_setfield(L, module, "build");
  lua_settop(L, module);
  return 1;
}
