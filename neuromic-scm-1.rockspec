rockspec_format = "3.0"
package = "neuromic"
version = "scm-1"
source = { url = "git+file:///work/main" }
description = {
  summary = "Tensors on OpenBLAS and biologically plausible learning rules for Lua 5.4",
  detailed = [[
neuromic is a C tensor core on OpenBLAS exposed as a Lua 5.4 module, with
network topologies, plasticity rules and experiment protocols in Lua.]],
  license = "MIT",
}
dependencies = { "lua >= 5.4, < 5.5" }
external_dependencies = {
  OPENBLAS = { library = "openblas" },
  ZLIB = { header = "zlib.h", library = "z" },
}
build = {
  type = "make",
  build_target = "neuromic.so",
  build_variables = {
    LUA_INC = "-I$(LUA_INCDIR)",
  },
  install_target = "install",
  install_variables = {
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
  },
}
