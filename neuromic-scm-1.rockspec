-- Install from a checkout: luarocks --lua-version 5.4 make
-- (add --local or --tree DIR for a private tree). `luarocks make` builds the
-- checkout it runs in and never reads `source`.
rockspec_format = "3.0"
package = "neuromic"
version = "scm-1"
source = {
  -- Used only by `luarocks build` or `install` of this file alone, which
  -- clone it. The project has no public address yet: ".invalid" is the
  -- domain reserved never to resolve; a published copy puts its git URL here.
  url = "git+https://neuromic.invalid/neuromic.git",
}
description = {
  summary = "Tensors on OpenBLAS and biologically plausible learning rules for Lua 5.4",
  detailed = [[
neuromic is a C tensor core on OpenBLAS exposed as a Lua 5.4 module, with
network topologies, plasticity rules and experiment protocols in Lua, and
its own interpreter (neuromic) with a REPL.]],
  license = "MIT",
}
dependencies = { "lua >= 5.4, < 5.5" }
external_dependencies = {
  OPENBLAS = { library = "openblas" },
  ZLIB = { header = "zlib.h", library = "z" },
}
build = {
  type = "make",
  build_target = "all",
  build_variables = {
    LUA_INC = "-I$(LUA_INCDIR)",
  },
  install_target = "install",
  install_variables = {
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}
