/*
** lsys.c: the operating-system functions of the experiment harness
** (nm.sys.atomic_write, nm.sys.append_file, nm.sys.lock, nm.sys.listdir, nm.crc32,
** nm.sys.clock, the stop flag, worker processes)
** over nm_sys.c.
*/
#include "lnm.h"
#include "nm_sys.h"
#include "nm_simd.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* nm.sys.atomic_write(path, data [, backup]): replaces the file crash-safely;
** with backup, the old file (if any) is kept under that name. */
static int sys_atomic_write(lua_State *L) {
  const char *path = nm_checkpath(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *backup = nm_optpath(L, 3);
  const char *step = "open";
  int err = nm_atomic_write(path, data, len, backup, &step);
  if (err != 0)
    return luaL_error(L, "atomic_write: cannot write '%s' (%s failed: %s)",
                      path, step, strerror(err));
  return 0;
}

/* nm.sys.append_file(path, data): appends data whole or not at all (a
** failed write cuts the file back). */
static int sys_append_file(lua_State *L) {
  const char *path = nm_checkpath(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *step = "open";
  int err = nm_append(path, data, len, &step);
  if (err != 0)
    return luaL_error(L, "append_file: cannot write '%s' (%s failed: %s)",
                      path, step, strerror(err));
  return 0;
}

/* nm.sys.lock(path, text) -> fd | nil, "busy", text of the holder | nil,
** message. The lock lives until nm.sys.unlock(path, fd) or the process ends. */
static int sys_lock(lua_State *L) {
  const char *path = nm_checkpath(L, 1);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  int fd;
  int err = nm_lock(path, text, len, &fd);
  if (err == 0) {
    lua_pushinteger(L, fd);
    return 1;
  }
  lua_pushnil(L);
  if (err != EWOULDBLOCK) {
    lua_pushstring(L, strerror(err));
    return 2;
  }
  lua_pushliteral(L, "busy");
  luaL_Buffer b;                   /* what the holder wrote, if readable */
  FILE *f = fopen(path, "rb");
  luaL_buffinit(L, &b);
  if (f != NULL) {
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, f);
    luaL_addlstring(&b, buf, n);
    fclose(f);
  }
  luaL_pushresult(&b);
  return 3;
}

static int sys_unlock(lua_State *L) {
  const char *path = nm_checkpath(L, 1);
  lua_Integer fd = luaL_checkinteger(L, 2);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 2, "not a file descriptor");
  nm_unlock(path, (int)fd);
  return 0;
}

static int add_name(void *ctx, const char *name) {
  lua_State *L = ctx;
  lua_pushstring(L, name);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* nm.sys.listdir(path) -> sorted list of entry names | nil, message */
static int sys_listdir(lua_State *L) {
  const char *path = nm_checkpath(L, 1);
  lua_newtable(L);
  int err = nm_listdir(path, add_name, L);
  if (err != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(err));
    return 2;
  }
  /* sorted when the table library is there (it always is in neuromic) */
  int lib = lua_getglobal(L, "table") == LUA_TTABLE;
  if (lib && lua_getfield(L, -1, "sort") == LUA_TFUNCTION) {
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
  } else {
    lua_pop(L, lib ? 2 : 1);
  }
  return 1;
}

/* nm.hash64(data): FNV-1a of the string as 16 hex digits. */
static int sys_hash64(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)nm_fnv1a64(data, len));
  lua_pushstring(L, hex);
  return 1;
}

/* nm.crc32(data [, crc]): CRC-32 as an integer in [0, 2^32). */
static int sys_crc32(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  lua_Integer init = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, init >= 0 && init <= 0xffffffffLL, 2, "must be in [0, 2^32)");
  lua_pushinteger(L, (lua_Integer)nm_crc32((uint32_t)init, data, len));
  return 1;
}

static int sys_clock(lua_State *L) {
  lua_pushnumber(L, nm_clock_monotonic());
  return 1;
}

/* nm.sys.thread_cpu() -> CPU seconds of the calling thread (the Lua
** state's own thread, without the pool's workers). */
static int sys_thread_cpu(lua_State *L) {
  double t = nm_thread_cpu();
  if (t < 0) return luaL_error(L, "thread_cpu: cannot read the thread's CPU clock");
  lua_pushnumber(L, t);
  return 1;
}

/* nm.sys.children_cpu() -> seconds (user + system), user, system: the CPU
** time of the ended and waited-for children so far. */
static int sys_children_cpu(lua_State *L) {
  double user, sys;
  if (nm_children_cpu(&user, &sys) != 0) return luaL_error(L, "children_cpu: getrusage failed");
  lua_pushnumber(L, user + sys);
  lua_pushnumber(L, user);
  lua_pushnumber(L, sys);
  return 3;
}

static int sys_isatty(lua_State *L) {
  lua_Integer fd = luaL_optinteger(L, 1, 2);
  luaL_argcheck(L, fd >= 0 && fd <= 1024, 1, "not a file descriptor");
  lua_pushboolean(L, nm_isatty((int)fd));
  return 1;
}

static int sys_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* nm.sys.sleep(seconds) -> seconds left when a signal cut it short (else 0). */
static int sys_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s < 1e9, 1, "must be a non-negative number of seconds");
  lua_pushnumber(L, nm_sleep(s));
  return 1;
}

static const char *signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGKILL: return "SIGKILL";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGPIPE: return "SIGPIPE";
    default: return "signal";
  }
}

static int sys_install_stop_handler(lua_State *L) {
  int err = nm_stop_install();
  if (err != 0)
    return luaL_error(L, "install_stop_handler: sigaction failed (%s)", strerror(err));
  lua_pushboolean(L, 1);
  return 1;
}

static int sys_remove_stop_handler(lua_State *L) {
  (void)L;
  nm_stop_uninstall();
  return 0;
}

/* nm.sys.stop_requested() -> false | true, "SIGINT"|"SIGTERM", signal number */
static int sys_stop_requested(lua_State *L) {
  int sig = nm_stop_signal();
  if (sig == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  lua_pushstring(L, signal_name(sig));
  lua_pushinteger(L, sig);
  return 3;
}

static int sys_clear_stop(lua_State *L) {
  (void)L;
  nm_stop_clear();
  return 0;
}

/* nm.sys.mkdir(path [, parents = true]) */
static int sys_mkdir(lua_State *L) {
  const char *path = nm_checkpath(L, 1);
  int parents = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  int err = nm_mkdir(path, parents);
  if (err != 0)
    return luaL_error(L, "mkdir: cannot create directory '%s' (%s)", path, strerror(err));
  return 0;
}

/* nm.sys.spawn({prog, arg1, ...} [, log_path]) -> pid */
static int sys_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *log_path = nm_optpath(L, 2);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1 && n < 100000, 1, "needs a program and its arguments");
  /* The argv array is a userdata, so an error below frees it with the GC;
  ** the strings stay on the stack (numbers converted there) until the
  ** child has started. */
  const char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
  luaL_checkstack(L, (int)n, "too many arguments to spawn");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1))
      return luaL_error(L, "spawn: argument %d of the command is not a string", (int)i);
    size_t len;
    argv[i - 1] = lua_tolstring(L, -1, &len);
    if (strlen(argv[i - 1]) != len)      /* exec would see it cut short */
      return luaL_error(L, "spawn: argument %d of the command contains a NUL byte", (int)i);
  }
  argv[n] = NULL;
  pid_t pid;
  int err = nm_spawn(argv, log_path, &pid);
  if (err != 0)
    return luaL_error(L, "spawn: cannot start '%s' (%s)", argv[0], strerror(err));
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

/* nm.sys.wait([pid [, nohang]]) -> pid, exit status, signal name | nil when
** nohang and nothing finished | nil, "interrupted" | nil, "no child" */
static int sys_wait(lua_State *L) {
  lua_Integer pid = luaL_optinteger(L, 1, -1);
  /* Checked before the cast: 2^32 - 1 must not become -1 (any child). */
  luaL_argcheck(L, pid >= -INT_MAX && pid <= INT_MAX, 1, "not a process id");
  int nohang = lua_toboolean(L, 2);
  pid_t done;
  int status, killed_by;
  int err = nm_wait((pid_t)pid, nohang, &done, &status, &killed_by);
  if (err == EINTR) {
    lua_pushnil(L);
    lua_pushliteral(L, "interrupted");
    return 2;
  }
  if (err == ECHILD) {
    lua_pushnil(L);
    lua_pushliteral(L, "no child");
    return 2;
  }
  if (err != 0) return luaL_error(L, "wait: %s", strerror(err));
  if (done == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)done);
  lua_pushinteger(L, status);
  if (killed_by) lua_pushstring(L, signal_name(killed_by));
  else lua_pushnil(L);
  return 3;
}

/* nm.sys.kill(pid [, "TERM"|"INT"|"KILL"|number]) -> true | nil, message */
static int sys_kill(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int sig = SIGTERM;
  /* Checked before the cast: 2^32 - 1 must not become -1 (every process). */
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "must be a process id");
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer s = luaL_checkinteger(L, 2);
    luaL_argcheck(L, s >= 0 && s <= 64, 2, "not a signal number");
    sig = (int)s;
  }
  else if (!lua_isnoneornil(L, 2)) {
    static const char *const names[] = {"TERM", "INT", "KILL", "SIGTERM", "SIGINT", "SIGKILL", NULL};
    static const int sigs[] = {SIGTERM, SIGINT, SIGKILL, SIGTERM, SIGINT, SIGKILL};
    sig = sigs[luaL_checkoption(L, 2, NULL, names)];
  }
  if (kill((pid_t)pid, sig) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* The multiversioned hot kernels (nm_simd.h) and their clone sets; a file
** that changes its set changes its line here. */
static const struct { const char *kernels; int set; } hot_kernels[] = {
  {"nm_math: unary (exp, log, tanh, sigmoid, softplus, ...), binary, compare, "
   "softmax, column sums, masked ger", NM_CLONES_V4},
  {"nm_plastic: gate, bias, masked add, masked ger, Adam, activation derivative",
   NM_CLONES_V4},
  {"nm_matvec: matrix-vector products, rank-1 updates, the fused update and product",
   NM_CLONES_V4},
  {"nm_folded: rates", NM_CLONES_V4},
  {"nm_bmvr: weight decay", NM_CLONES_V4},
  {"nm_nk: hill-climber kernels", NM_CLONES_V4},
  {"nm_microcircuit: rates and updates", NM_CLONES_V4},
};

static const char *level_name(int level) {
  return level == 4 ? "x86-64-v4" : level == 3 ? "x86-64-v3" : "baseline";
}

/* nm.sys.isa_versions() -> {cpu = level, kernels = {{kernels =, clones =, runs =}, ...}}:
** which ISA version of each hot kernel runs on this CPU. */
static int sys_isa_versions(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, level_name(nm_isa_level(NM_CLONES_V4)));
  lua_setfield(L, -2, "cpu");
  int n = (int)(sizeof hot_kernels / sizeof hot_kernels[0]);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, hot_kernels[i].kernels);
    lua_setfield(L, -2, "kernels");
    lua_pushstring(L, !NM_HAVE_CLONES ? "baseline"
                      : hot_kernels[i].set >= 4 && NM_CLONES_MAX >= 4
                      ? "x86-64-v4, x86-64-v3, baseline" : "x86-64-v3, baseline");
    lua_setfield(L, -2, "clones");
    lua_pushstring(L, level_name(nm_isa_level(hot_kernels[i].set)));
    lua_setfield(L, -2, "runs");
    lua_seti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "kernels");
  return 1;
}

static const luaL_Reg sys_funcs[] = {
  {"isa_versions", sys_isa_versions},
  {"atomic_write", sys_atomic_write},
  {"append_file", sys_append_file},
  {"lock", sys_lock},
  {"unlock", sys_unlock},
  {"listdir", sys_listdir},
  {"clock", sys_clock},
  {"children_cpu", sys_children_cpu},
  {"thread_cpu", sys_thread_cpu},
  {"isatty", sys_isatty},
  {"getpid", sys_getpid},
  {"sleep", sys_sleep},
  {"install_stop_handler", sys_install_stop_handler},
  {"remove_stop_handler", sys_remove_stop_handler},
  {"stop_requested", sys_stop_requested},
  {"clear_stop", sys_clear_stop},
  {"mkdir", sys_mkdir},
  {"spawn", sys_spawn},
  {"wait", sys_wait},
  {"kill", sys_kill},
  {NULL, NULL}
};

/* Checksums of bytes belong to the tensor library (nm.crc32, nm.hash64);
** the rest is nm.sys. */
static const luaL_Reg hash_funcs[] = {
  {"crc32", sys_crc32},
  {"hash64", sys_hash64},
  {NULL, NULL}
};

void nm_open_sys(lua_State *L, int module, int methods) {
  (void)methods;
  lua_pushvalue(L, module);
  luaL_setfuncs(L, hash_funcs, 0);
  lua_pop(L, 1);
  luaL_newlib(L, sys_funcs);
  lua_setfield(L, module, "sys");
}
