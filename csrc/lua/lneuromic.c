/*
** lneuromic.c: luaopen_neuromic, the module opener; gathers the
** submodules of the binding into one table. The module's top is the
** tensor library (constructors, Tensor, Generator, io, products, linear
** algebra, hashes, version, build); OS functions are in nm.sys (lsys.c)
** and the model kernels of csrc/models in nm.kernels.
*/
#include "lnm.h"


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
  lua_newtable(L);                      /* nm.kernels: the model kernels */
  int kernels = lua_gettop(L);
  nm_open_nk(L, kernels, methods);
  nm_open_plastic(L, kernels, methods);
  nm_open_bmvr(L, kernels, methods);
  nm_open_microcircuit(L, kernels, methods);
  nm_open_meta(L, kernels, methods);
  nm_open_rcn(L, kernels, methods);
  nm_open_folded(L, kernels, methods);
  nm_open_kernel(L, kernels, methods);
  lua_setfield(L, module, "kernels");
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
