/*
** neuromic.c: the bundled interpreter. Lua 5.4 with the neuromic module
** preloaded, package paths rooted at the executable's directory, and a
** readline REPL (persistent history, completion, Ctrl-C interruption).
** Follows the command line and REPL conventions of Lua's own lua.c.
*/
#define _XOPEN_SOURCE 700           /* realpath, on top of POSIX.1-2008 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>

#include <readline/readline.h>
#include <readline/history.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "nm_tensor.h"
#include "nm_math.h"
#include "lnm.h"

/* nm_version (from the generated build/version.c) */

#define PROMPT1       "> "
#define PROMPT2       ">> "
#define HISTORY_NAME  ".neuromic_history"
#define HISTORY_MAX   1000          /* entries kept in memory and on disk */
#define LINE_MAX_NR   4096          /* line buffer when stdin is no terminal */
#define EOF_MARK      "<eof>"       /* how the parser ends an incomplete chunk */
#define NOENV_KEY     "LUA_NOENV"   /* registry flag read by the package library */
#define REPL_SHOW_KEY "neuromic.repl.show"   /* registry: how results print */

/*
** The one lua_State and the signal flags live in C globals because a
** signal handler and readline's completion callback can reach nothing
** else (lua.c does the same).
*/
static lua_State *globalL = NULL;
static const char *progname = "neuromic";
static volatile sig_atomic_t prompt_sigint = 0;   /* Ctrl-C while reading */
static volatile sig_atomic_t prompt_sigwinch = 0; /* terminal resized */
static volatile sig_atomic_t prompt_sigtstp = 0;  /* Ctrl-Z */
static volatile sig_atomic_t prompt_fatal = 0;    /* SIGTERM, SIGHUP */
static int error_exit_status = EXIT_FAILURE;      /* see message_handler */
static int error_for_user = 0;    /* the last error is a message for the user */


/* {======================================================
** Messages and protected calls
** ======================================================= */

static void print_usage(const char *badoption) {
  if (badoption != NULL) {
    if (badoption[1] == 'e' || badoption[1] == 'l' || strcmp(badoption, "--emit") == 0)
      fprintf(stderr, "%s: '%s' needs argument\n", progname, badoption);
    else
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, badoption);
  }
  fprintf(badoption ? stderr : stdout,
    "usage: %s [options] [script [args]]\n"
    "Lua 5.4 with the neuromic module preloaded: the global nm is\n"
    "require \"neuromic\" in scripts, -e and the REPL.\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into a global named after it\n"
    "            (its last dotted part); -l g=mod names the global g\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables (LUA_INIT, LUA_PATH, ...)\n"
    "  -W        turn warnings on\n"
    "  --emit rule  print the C the rule compiler generates for a rule file\n"
    "            (its step and adjoint) and exit\n"
    "  --help    show this help and exit\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n"
    "Package paths include lua/, rules/ and experiments/ next to the\n"
    "executable (or the installed modules), from any working directory;\n"
    "a script that is no file here is looked up among the experiments\n"
    "(neuromic bmvr.lua --quick). In the REPL, help(x) or ?x describes a\n"
    "function, method, rule or experiment option. REPL history is kept in\n"
    "$NEUROMIC_HISTORY (default ~/" HISTORY_NAME "; empty: none).\n",
    progname);
}

/* Prints a message on stderr, prefixed by the program name if any. */
static void report_message(const char *pname, const char *msg) {
  if (pname != NULL)
    fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* Reports the error message on top of the stack, if status is an error. */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL)
      msg = "(error object is not a string)";
    report_message(error_for_user ? NULL : progname, msg);
    error_for_user = 0;
    lua_pop(L, 1);
  }
  return status;
}

/* 1 when NEUROMIC_DEBUG asks for tracebacks of every error. */
static int debug_wanted(void) {
  const char *d = getenv("NEUROMIC_DEBUG");
  return d != NULL && d[0] != '\0' && strcmp(d, "0") != 0;
}

/*
** Message handler: turns any error object into a string with a
** traceback -- except an error that is a table {message = text,
** exit_status = n} (nm.cli's user errors and failed runs): that is a
** message for the user, shown alone (with the traceback only when
** NEUROMIC_DEBUG is set), and a script ending with it exits with status n.
*/
static int message_handler(lua_State *L) {
  if (lua_type(L, 1) == LUA_TTABLE) {
    lua_getfield(L, 1, "exit_status");
    lua_getfield(L, 1, "message");
    if (lua_isinteger(L, -2) && lua_type(L, -1) == LUA_TSTRING) {
      lua_Integer st = lua_tointeger(L, -2);
      error_exit_status = (st >= 1 && st <= 125) ? (int)st : EXIT_FAILURE;
      error_for_user = 1;         /* names its program itself */
      if (!debug_wanted()) return 1;
      luaL_traceback(L, L, lua_tostring(L, -1), 1);
      return 1;
    }
    lua_pop(L, 2);
  }
  error_exit_status = EXIT_FAILURE;
  error_for_user = 0;
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;                     /* the object describes itself */
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The hook that stops a running chunk: removes itself, then raises --
** unless a C kernel already raised "interrupted!" for this Ctrl-C (it
** clears nm_interrupted), so one Ctrl-C gives one error even inside pcall. */
static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (!nm_interrupted) return;
  nm_interrupted = 0;               /* consumed by this error */
  luaL_error(L, "interrupted!");
}

/*
** SIGINT while Lua code runs: ask the Lua VM to stop at its next
** instruction and tell long C kernels (which poll nm_interrupted) to
** return early. Only a count hook: a call hook would also fire on the
** message handler of a kernel's "interrupted!" error and replace it.
** The handler is one-shot, so a second Ctrl-C kills a process stuck in
** code that checks neither.
*/
static void on_sigint_running(int sig) {
  signal(sig, SIG_DFL);             /* one-shot: a second Ctrl-C kills */
  nm_interrupted = 1;
  lua_sethook(globalL, stop_hook, LUA_MASKCOUNT, 1);
}

/* Installs handler for sig, saving the previous action in old if given. */
static void set_signal(int sig, void (*handler)(int), struct sigaction *old) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, old);
}

/* Calls the function below its narg arguments with a traceback handler
** and Ctrl-C handling; like lua_pcall otherwise. */
static int docall(lua_State *L, int narg, int nres) {
  int status;
  int base = lua_gettop(L) - narg;
  struct sigaction saved;
  lua_pushcfunction(L, message_handler);
  lua_insert(L, base);
  globalL = L;
  set_signal(SIGINT, on_sigint_running, &saved);
  status = lua_pcall(L, narg, nres, base);
  sigaction(SIGINT, &saved, NULL);
  /* An error raised by a kernel (NM_EINTR) leaves the hook armed. */
  lua_sethook(L, NULL, 0, 0);
  lua_remove(L, base);
  return status;
}

static void print_version(void) {
  printf("neuromic %s  (%s)\n", nm_version, LUA_COPYRIGHT);
  fflush(stdout);
}

/* }====================================================== */


/* {======================================================
** Environment: package paths, the module, the arg table
** ======================================================= */

/* Pushes the directory holding the executable (symlinks resolved). */
static void push_root(lua_State *L) {
  char *exe = realpath("/proc/self/exe", NULL);
  if (exe == NULL) {                /* no /proc: fall back to the cwd */
    lua_pushliteral(L, ".");
    return;
  }
  char *slash = strrchr(exe, '/');
  if (slash == exe)
    slash[1] = '\0';                /* executable in "/" */
  else if (slash != NULL)
    *slash = '\0';
  lua_pushstring(L, exe);
  free(exe);
}

/* Where an installed interpreter (<tree>/bin/neuromic, from `make install`
** or `luarocks make`) finds the Lua modules, relative to its directory. */
#define INSTALLED_LUADIR "../share/lua/" LUA_VERSION_MAJOR "." LUA_VERSION_MINOR

/*
** Prepends the project directories to package.path, keeping the
** system defaults (and LUA_PATH) after them so busted and the Debian
** modules still load; sets the global NEUROMIC_ROOT.
*/
static void setup_paths(lua_State *L) {
  static const char *const dirs[] = {
    "lua/?.lua", "lua/?/init.lua", "rules/?.lua", "experiments/?.lua",
    "?.lua", "?/init.lua", INSTALLED_LUADIR "/?.lua", INSTALLED_LUADIR "/?/init.lua",
    NULL
  };
  luaL_Buffer b;
  int i;
  push_root(L);
  int root = lua_gettop(L);
  lua_getglobal(L, "package");
  int package = lua_gettop(L);
  luaL_buffinit(L, &b);
  for (i = 0; dirs[i] != NULL; i++) {
    lua_pushvalue(L, root);
    luaL_addvalue(&b);
    luaL_addchar(&b, '/');
    luaL_addstring(&b, dirs[i]);
    luaL_addchar(&b, ';');
  }
  lua_getfield(L, package, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, package, "path");
  lua_pop(L, 1);                    /* package */
  lua_setglobal(L, "NEUROMIC_ROOT");
}

/* A source file of this checkout newer than the running interpreter: the
** Lua libraries (read at run time) and the C module (linked in) may then
** disagree, which shows up as a Lua error deep in a library rather than
** as the user's mistake. Only in a source tree (csrc/ next to the
** executable; an installed interpreter has none); a warning, not an
** error, so a run started while C is being edited still runs. */
static int newer_than(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

static void warn_if_stale(lua_State *L) {
  static const char *const dirs[] = {"csrc/core", "csrc/models", "csrc/lua", "csrc/interp", NULL};
  struct stat exe, st;
  lua_getglobal(L, "NEUROMIC_ROOT");
  const char *root = lua_tostring(L, -1);
  if (root == NULL || stat("/proc/self/exe", &exe) != 0) {
    lua_pop(L, 1);
    return;
  }
  for (int i = 0; dirs[i] != NULL; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
    DIR *d = opendir(path);
    if (d == NULL) continue;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      size_t len = strlen(e->d_name);
      if (len < 3 || e->d_name[len - 2] != '.' ||
          (e->d_name[len - 1] != 'c' && e->d_name[len - 1] != 'h'))
        continue;
      snprintf(path, sizeof path, "%s/%s/%s", root, dirs[i], e->d_name);
      if (stat(path, &st) == 0 && newer_than(&st.st_mtim, &exe.st_mtim)) {
        fprintf(stderr, "neuromic: warning: %s/%s changed after this interpreter was built; "
                "run make\n", dirs[i], e->d_name);
        fflush(stderr);
        closedir(d);
        lua_pop(L, 1);
        return;
      }
    }
    closedir(d);
  }
  lua_pop(L, 1);
}

/* The module is linked in: require "neuromic" finds it in package.preload. */
static void preload_module(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_neuromic);
  lua_setfield(L, -2, "neuromic");
  lua_pop(L, 1);
}

/*
** The global 'arg', as in lua.c: arg[0] is the script, arg[1..] its
** arguments, negative indices the interpreter and its options.
*/
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  int i;
  if (script == argc)
    script = 0;                     /* no script: arg[0] is the interpreter */
  lua_createtable(L, argc - (script + 1), script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK)
    status = docall(L, 0, 0);
  return report(L, status);
}

static int dofile(lua_State *L, const char *name) {
  return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l [g=]mod: g = require(mod); g defaults to mod's last dotted part. */
static int dolibrary(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  const char *modname = eq ? eq + 1 : spec;
  int status;
  lua_getglobal(L, "require");
  lua_pushstring(L, modname);
  status = docall(L, 1, 1);
  if (status == LUA_OK) {
    if (eq != NULL)
      lua_pushlstring(L, spec, (size_t)(eq - spec));
    else {
      const char *dot = strrchr(modname, '.');
      lua_pushstring(L, dot ? dot + 1 : modname);
    }
    lua_insert(L, -2);
    lua_setglobal(L, lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  return report(L, status);
}

/* Pushes the script's arguments (arg[1..n]); returns n. */
static int push_script_args(lua_State *L) {
  int i, n;
  if (lua_getglobal(L, "arg") != LUA_TTABLE)
    luaL_error(L, "'arg' is not a table");
  n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (i = 1; i <= n; i++)
    lua_rawgeti(L, -i, i);
  lua_remove(L, -i);                /* the table */
  return n;
}

/*
** A script named experiments/X.lua, X.lua or X that is no file here is
** looked up among the bundled experiments: experiments/ next to the
** executable (a checkout) or nm/experiments/ of an installed tree. Pushes
** the file name to load (fname itself when nothing else matches).
*/
static const char *find_script(lua_State *L, const char *fname) {
  static const char *const dirs[] = {
    "experiments/", INSTALLED_LUADIR "/nm/experiments/", NULL
  };
  const char *base = fname;
  int i;
  if (access(fname, F_OK) == 0 || fname[0] == '/')
    return lua_pushstring(L, fname);
  if (strncmp(base, "experiments/", 12) == 0)
    base += 12;
  if (strchr(base, '/') != NULL || base[0] == '\0' || base[0] == '.')
    return lua_pushstring(L, fname);
  size_t blen = strlen(base);
  int has_ext = blen > 4 && strcmp(base + blen - 4, ".lua") == 0;
  for (i = 0; dirs[i] != NULL; i++) {
    push_root(L);
    const char *path = lua_pushfstring(L, "%s/%s%s%s", lua_tostring(L, -1), dirs[i],
                                       base, has_ext ? "" : ".lua");
    lua_remove(L, -2);
    if (access(path, R_OK) == 0)
      return path;
    lua_pop(L, 1);
  }
  return lua_pushstring(L, fname);
}

static int handle_script(lua_State *L, char **argv) {
  const char *fname = argv[0];
  int status;
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0)
    status = luaL_loadfile(L, NULL);   /* stdin */
  else {
    find_script(L, fname);
    status = luaL_loadfile(L, lua_tostring(L, -1));
    lua_remove(L, -2);              /* the file name */
  }
  if (status == LUA_OK) {
    int n = push_script_args(L);
    status = docall(L, n, LUA_MULTRET);
  }
  return report(L, status);
}

/* LUA_INIT_5_4 or LUA_INIT: "@file" runs a file, anything else a string. */
static int handle_luainit(lua_State *L) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv("LUA_INIT_5_4");
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv("LUA_INIT");
  }
  if (init == NULL)
    return LUA_OK;
  if (init[0] == '@')
    return dofile(L, init + 1);
  return dostring(L, init, name);
}

/* }====================================================== */


/* {======================================================
** Command line
** ======================================================= */

enum { HAS_ERROR = 1, HAS_I = 2, HAS_V = 4, HAS_E = 8, HAS_BIG_E = 16,
       HAS_HELP = 32, HAS_EMIT = 64 };

/* --emit RULE: the rule file whose generated C is printed. */
static const char *emit_rule = NULL;
/* An exit status decided by the interpreter itself (-1: none). */
static int exit_status = -1;

/*
** Scans the options; returns the flags and stores in *first the index
** of the script (argc when there is none). On a bad option *first is
** the index of the culprit.
*/
static int collect_args(char **argv, int *first) {
  int flags = 0;
  int i;
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-')
      return flags;                 /* the script */
    if (strcmp(argv[i], "--help") == 0) {
      flags |= HAS_HELP;
      continue;
    }
    if (strcmp(argv[i], "--emit") == 0) {
      if (argv[i + 1] == NULL)
        return HAS_ERROR;
      flags |= HAS_EMIT;
      emit_rule = argv[++i];
      continue;
    }
    switch (argv[i][1]) {
      case '-':                     /* "--": script follows */
        if (argv[i][2] != '\0')
          return HAS_ERROR;
        *first = i + 1;
        return flags;
      case '\0':                    /* "-": stdin is the script */
        return flags;
      case 'E': case 'W': case 'i': case 'v':   /* flags without argument */
        if (argv[i][2] != '\0')
          return HAS_ERROR;
        if (argv[i][1] == 'E')
          flags |= HAS_BIG_E;
        else if (argv[i][1] == 'i')
          flags |= HAS_I | HAS_V;   /* -i implies -v */
        else if (argv[i][1] == 'v')
          flags |= HAS_V;
        break;
      case 'e': case 'l':           /* options with an argument */
        if (argv[i][1] == 'e')
          flags |= HAS_E;
        if (argv[i][2] == '\0') {   /* argument in the next word */
          i++;
          if (argv[i] == NULL || argv[i][0] == '-')
            return HAS_ERROR;
        }
        break;
      default:
        return HAS_ERROR;
    }
  }
  *first = i;
  return flags;
}

/* Runs -e, -l and -W in command-line order, up to the script. */
static int run_args(lua_State *L, char **argv, int n) {
  int i;
  for (i = 1; i < n; i++) {
    int option = argv[i][1];
    if (strcmp(argv[i], "--help") == 0)
      continue;
    if (strcmp(argv[i], "--emit") == 0) {
      i++;
      continue;
    }
    switch (option) {
      case 'e':
      case 'l': {
        const char *extra = argv[i] + 2;
        int status;
        if (*extra == '\0')
          extra = argv[++i];
        status = (option == 'e') ? dostring(L, extra, "=(command line)")
                                 : dolibrary(L, extra);
        if (status != LUA_OK)
          return 0;
        break;
      }
      case 'W':
        lua_warning(L, "@on", 0);
        break;
      default:
        break;
    }
  }
  return 1;
}

/* }====================================================== */


/* {======================================================
** Line input: readline on a terminal, fgets otherwise
** ======================================================= */

enum { READ_LINE, READ_EOF, READ_INTERRUPT };

static void close_history(void);

static int use_readline = 0;
static char *history_path = NULL;   /* NULL: history not saved */
static char *readline_result = NULL;
static int readline_done = 0;

static void on_line(char *line) {
  readline_result = line;
  readline_done = 1;
  rl_callback_handler_remove();     /* no new prompt until asked */
}

/* Signals while the prompt waits: noted here, handled in the read loop. */
static void on_prompt_signal(int sig) {
  switch (sig) {
    case SIGINT: prompt_sigint = 1; break;
    case SIGWINCH: prompt_sigwinch = 1; break;
    case SIGTSTP: prompt_sigtstp = 1; break;
    default: prompt_fatal = sig; break;
  }
}

/* Signals the prompt handles itself: readline's own handlers are off
** (rl_catch_signals = 0) because they do not run while we wait. */
static const int prompt_signals[] = { SIGINT, SIGWINCH, SIGTSTP, SIGTERM,
                                      SIGHUP };
#define NPROMPT_SIGNALS (sizeof prompt_signals / sizeof prompt_signals[0])

/* Stops the process the way the default SIGTSTP would, with the terminal
** restored for the shell meanwhile and re-prepared on return. */
static void suspend_at_prompt(const sigset_t *waitmask) {
  rl_cleanup_after_signal();
  set_signal(SIGTSTP, SIG_DFL, NULL);
  sigprocmask(SIG_SETMASK, waitmask, NULL);   /* SIGTSTP now unblocked */
  raise(SIGTSTP);                   /* stopped here until SIGCONT */
  set_signal(SIGTSTP, on_prompt_signal, NULL);
  rl_reset_after_signal();
  rl_forced_update_display();
}

/*
** readline through its callback interface, so that a Ctrl-C while the
** user types is seen here (pselect returns EINTR) and abandons the line
** instead of killing the process. Signals are blocked except inside
** pselect, so none can slip in between the check and the wait.
*/
static int read_terminal_line(const char *prompt, char **line) {
  struct sigaction saved[NPROMPT_SIGNALS];
  sigset_t block, waitmask, blocked;
  int status = READ_EOF;
  int fd = fileno(rl_instream ? rl_instream : stdin);
  size_t i;
  sigemptyset(&block);
  for (i = 0; i < NPROMPT_SIGNALS; i++)
    sigaddset(&block, prompt_signals[i]);
  sigprocmask(SIG_BLOCK, &block, &waitmask);
  sigprocmask(SIG_BLOCK, NULL, &blocked);
  prompt_sigint = prompt_sigtstp = 0;
  for (i = 0; i < NPROMPT_SIGNALS; i++)
    set_signal(prompt_signals[i], on_prompt_signal, &saved[i]);
  readline_done = 0;
  readline_result = NULL;
  if (rl_instream != NULL && rl_outstream != NULL)
    rl_reset_screen_size();         /* resized while a chunk ran? */
  rl_callback_handler_install(prompt, on_line);
  for (;;) {
    fd_set fds;
    if (prompt_fatal) {             /* terminal back to normal, then die */
      int sig = prompt_fatal;
      rl_callback_handler_remove();
      rl_cleanup_after_signal();
      close_history();
      set_signal(sig, SIG_DFL, NULL);
      sigprocmask(SIG_UNBLOCK, &block, NULL);
      raise(sig);
      exit(EXIT_FAILURE);           /* if the signal did not kill us */
    }
    if (prompt_sigwinch) {
      prompt_sigwinch = 0;
      rl_resize_terminal();
    }
    if (prompt_sigtstp) {
      prompt_sigtstp = 0;
      suspend_at_prompt(&waitmask);
      sigprocmask(SIG_SETMASK, &blocked, NULL);
    }
    if (prompt_sigint) {            /* drop the partial line */
      rl_point = rl_end;            /* mark it at its end, as a shell does */
      rl_redisplay();
      fputs("^C\n", rl_outstream);
      fflush(rl_outstream);
      rl_free_line_state();
      rl_callback_sigcleanup();
      rl_cleanup_after_signal();
      rl_callback_handler_remove();
      status = READ_INTERRUPT;
      break;
    }
    FD_ZERO(&fds);
    FD_SET(fd, &fds);
    int ready = pselect(fd + 1, &fds, NULL, NULL, NULL, &waitmask);
    if (ready < 0) {
      if (errno == EINTR)
        continue;
      rl_callback_handler_remove();
      break;                        /* read error: treat as end of input */
    }
    rl_callback_read_char();
    if (readline_done) {
      *line = readline_result;
      status = readline_result ? READ_LINE : READ_EOF;
      break;
    }
  }
  for (i = 0; i < NPROMPT_SIGNALS; i++)
    sigaction(prompt_signals[i], &saved[i], NULL);
  sigprocmask(SIG_SETMASK, &waitmask, NULL);
  return status;
}

/* Non-terminal stdin: no prompt, no editing; lines are malloc'ed. */
static int read_plain_line(char **line) {
  char buf[LINE_MAX_NR];
  size_t len = 0;
  char *s = NULL;
  while (fgets(buf, sizeof buf, stdin) != NULL) {
    size_t n = strlen(buf);
    char *grown = realloc(s, len + n + 1);
    if (grown == NULL) {
      free(s);
      return READ_EOF;
    }
    s = grown;
    memcpy(s + len, buf, n + 1);
    len += n;
    if (len > 0 && s[len - 1] == '\n') {
      s[--len] = '\0';
      break;
    }
  }
  if (s == NULL)
    return READ_EOF;
  *line = s;
  return READ_LINE;
}

/* Reads one line (without its newline) into a malloc'ed *line. */
static int read_line(const char *prompt, char **line) {
  *line = NULL;
  if (use_readline)
    return read_terminal_line(prompt, line);
  return read_plain_line(line);
}

/* Remembers a non-empty line that differs from the previous entry, and
** appends it to the history file at once (no loss on a crash). */
static void save_line(const char *line) {
  HIST_ENTRY *last;
  if (!use_readline || line[0] == '\0')
    return;
  last = history_length > 0 ? history_get(history_base + history_length - 1)
                            : NULL;
  if (last != NULL && strcmp(last->line, line) == 0)
    return;
  add_history(line);
  if (history_path != NULL)
    append_history(1, history_path);
}

/* }====================================================== */


/* {======================================================
** Completion of global names and fields (nm.ze<TAB>, t:na<TAB>)
** ======================================================= */

static char **completions = NULL;   /* candidates of the current attempt */
static size_t completion_count = 0, completion_next = 0;

static void free_completions(void) {
  size_t i;
  for (i = 0; i < completion_count; i++)
    free(completions[i]);
  free(completions);
  completions = NULL;
  completion_count = completion_next = 0;
}

/* Is s a chain of identifiers joined by '.' or ':' (last part may be
** empty)? Only then is it completed as Lua; else as a file name. */
static int is_name_chain(const char *s) {
  int at_start = 1;
  for (; *s; s++) {
    if (*s == '.' || *s == ':') {
      if (at_start)
        return 0;
      at_start = 1;
    }
    else if (*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
             || (!at_start && *s >= '0' && *s <= '9'))
      at_start = 0;
    else
      return 0;
  }
  return 1;
}

/* Adds the string keys of the table on top starting with prefix to the
** result table at index res; raw accesses only, so no code runs. */
static void add_matching_keys(lua_State *L, int res, const char *head,
                              const char *prefix, size_t plen) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *key = lua_tostring(L, -1);
      if (strncmp(key, prefix, plen) == 0 && is_name_chain(key)
          && strchr(key, '.') == NULL && strchr(key, ':') == NULL) {
        lua_pushfstring(L, "%s%s", head, key);
        lua_rawseti(L, res, (lua_Integer)luaL_len(L, res) + 1);
      }
    }
  }
}

/*
** Protected: completes text (upvalue-free, argument 1) into a table of
** candidates. Walks the dotted path from _G with raw gets, looking also
** into metatables whose __index is a table (tensor methods).
*/
static int collect_completions(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  const char *cut = NULL, *p;
  lua_newtable(L);
  int res = lua_gettop(L);
  for (p = text; *p; p++)
    if (*p == '.' || *p == ':')
      cut = p;
  lua_pushglobaltable(L);
  if (cut != NULL) {                /* walk down to the table to list */
    const char *part = text;
    while (part < cut) {
      const char *end = part + strcspn(part, ".:");
      lua_pushlstring(L, part, (size_t)(end - part));
      if (lua_type(L, -2) == LUA_TTABLE)
        lua_rawget(L, -2);
      else {
        lua_pop(L, 1);
        lua_pushnil(L);
      }
      lua_remove(L, -2);
      part = end + 1;
    }
  }
  const char *prefix = cut ? cut + 1 : text;
  size_t plen = strlen(prefix);
  lua_pushlstring(L, text, (size_t)(prefix - text));
  const char *head = lua_tostring(L, -1);
  lua_insert(L, -2);
  int depth;
  for (depth = 0; depth < 8 && !lua_isnil(L, -1); depth++) {
    if (lua_type(L, -1) == LUA_TTABLE)
      add_matching_keys(L, res, head, prefix, plen);
    if (!lua_getmetatable(L, -1))
      break;
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    if (lua_type(L, -1) != LUA_TTABLE) {  /* a function (tensors): the */
      lua_pop(L, 1);                      /* methods it reads, if given */
      lua_pushliteral(L, "__methods");
      lua_rawget(L, -2);
    }
    lua_remove(L, -2);              /* metatable */
    lua_remove(L, -2);              /* previous object */
    if (lua_type(L, -1) != LUA_TTABLE)
      break;
  }
  lua_settop(L, res);
  return 1;
}

static char *completion_generator(const char *text, int state) {
  (void)text;
  if (state == 0)
    completion_next = 0;
  if (completion_next < completion_count)
    return strdup(completions[completion_next++]);
  return NULL;
}

static char **attempt_completion(const char *text, int start, int end) {
  lua_State *L = globalL;
  (void)start; (void)end;
  if (L == NULL || !is_name_chain(text))
    return NULL;                    /* readline completes file names */
  rl_attempted_completion_over = 1;
  rl_completion_append_character = '\0';
  free_completions();
  int top = lua_gettop(L);
  lua_pushcfunction(L, collect_completions);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    lua_Integer i, n = luaL_len(L, -1);
    completions = malloc((size_t)(n > 0 ? n : 1) * sizeof *completions);
    for (i = 1; completions != NULL && i <= n; i++) {
      lua_rawgeti(L, -1, i);
      char *copy = strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
      if (copy == NULL)
        break;
      completions[completion_count++] = copy;
    }
  }
  lua_settop(L, top);
  return rl_completion_matches(text, completion_generator);
}

/* }====================================================== */


/* {======================================================
** REPL
** ======================================================= */

/* Compiles "return <line>"; leaves the chunk or nothing on the stack. */
static int try_as_expression(lua_State *L, const char *line) {
  const char *code = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, code, strlen(code), "=stdin");
  lua_remove(L, -2);                /* the code string */
  if (status != LUA_OK)
    lua_pop(L, 1);
  return status;
}

/* Is the syntax error on top of the stack an unfinished chunk? */
static int is_incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    size_t marklen = sizeof(EOF_MARK) - 1;
    if (msg != NULL && len >= marklen
        && strcmp(msg + len - marklen, EOF_MARK) == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/*
** Reads a chunk: one line, tried as an expression, else as statements,
** reading continuation lines while it is incomplete. Returns the load
** status with the chunk (or error message) on the stack, or -1 at end
** of input. A Ctrl-C at a prompt abandons the chunk.
*/
static int load_chunk(lua_State *L) {
  char *line;
  int status;
  lua_settop(L, 0);
  for (;;) {                        /* until a first line is read */
    status = read_line(PROMPT1, &line);
    if (status == READ_EOF)
      return -1;
    if (status == READ_LINE)
      break;
  }
  if (line[strspn(line, " \t")] == '?') {  /* ?x is help "x" */
    const char *topic = line + strspn(line, " \t") + 1;
    size_t len;
    save_line(line);
    lua_getglobal(L, "string");     /* code: help(<topic quoted by %q>) */
    lua_getfield(L, -1, "format");
    lua_remove(L, -2);
    lua_pushliteral(L, "help(%q)");
    lua_pushstring(L, topic);
    free(line);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK)
      return LUA_ERRRUN;            /* the message is on the stack */
    const char *code = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, code, len, "=stdin");
    lua_remove(L, -2);
    return status;
  }
  if (try_as_expression(L, line) == LUA_OK) {
    save_line(line);
    free(line);
    return LUA_OK;
  }
  lua_pushstring(L, line);          /* the chunk so far */
  free(line);
  for (;;) {
    size_t len;
    const char *code = lua_tolstring(L, 1, &len);
    status = luaL_loadbuffer(L, code, len, "=stdin");
    if (!is_incomplete(L, status))
      break;
    int got = read_line(PROMPT2, &line);
    if (got == READ_INTERRUPT) {    /* the lines so far stay recallable */
      save_line(lua_tostring(L, 1));
      lua_settop(L, 0);
      return load_chunk(L);         /* start afresh */
    }
    if (got == READ_EOF) {          /* report the unfinished chunk */
      code = lua_tolstring(L, 1, &len);
      status = luaL_loadbuffer(L, code, len, "=stdin");
      break;
    }
    lua_pushliteral(L, "\n");
    lua_pushstring(L, line);
    free(line);
    lua_concat(L, 3);
  }
  save_line(lua_tostring(L, 1));    /* the whole chunk: one history entry */
  lua_remove(L, 1);                 /* the source text */
  return status;
}

/* Protected: prints its arguments separated by tabs, using __tostring
** (tensors show their values and a footer). */
static int print_values(lua_State *L) {
  int n = lua_gettop(L), i;
  int show = lua_getfield(L, LUA_REGISTRYINDEX, REPL_SHOW_KEY) == LUA_TFUNCTION;
  lua_pop(L, 1);
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *s;
    if (show) {                     /* nm.repl.show: readable tables */
      lua_getfield(L, LUA_REGISTRYINDEX, REPL_SHOW_KEY);
      lua_pushvalue(L, i);
      lua_call(L, 1, 1);
      s = luaL_tolstring(L, -1, &len);
      lua_remove(L, -2);
    }
    else
      s = luaL_tolstring(L, i, &len);
    if (i > 1)
      fputc('\t', stdout);
    fwrite(s, 1, len, stdout);
    lua_pop(L, 1);
  }
  fputc('\n', stdout);
  fflush(stdout);
  return 0;
}

static void print_results(lua_State *L) {
  int n = lua_gettop(L);
  if (n == 0)
    return;
  luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
  lua_pushcfunction(L, print_values);
  lua_insert(L, 1);
  if (lua_pcall(L, n, 0, 0) != LUA_OK)
    report_message(progname, lua_pushfstring(L, "error printing a result (%s)",
                                             lua_tostring(L, -1)));
}

/* Where the history lives: $NEUROMIC_HISTORY, else ~/.neuromic_history;
** an empty NEUROMIC_HISTORY (or no HOME) keeps no file. */
static void open_history(void) {
  const char *env = getenv("NEUROMIC_HISTORY");
  const char *home = getenv("HOME");
  using_history();
  stifle_history(HISTORY_MAX);
  /* a "#<time>" line before each entry lets a multi-line chunk come back
  ** from the file as one entry */
  history_comment_char = '#';
  history_write_timestamps = 1;
  history_multiline_entries = 1;
  if (env != NULL)
    history_path = env[0] ? strdup(env) : NULL;
  else if (home != NULL && home[0] != '\0') {
    size_t n = strlen(home) + sizeof(HISTORY_NAME) + 1;
    history_path = malloc(n);
    if (history_path != NULL)
      snprintf(history_path, n, "%s/%s", home, HISTORY_NAME);
  }
  if (history_path == NULL)
    return;
  /* appending needs an existing file; private, as lines may hold secrets */
  int fd = open(history_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd >= 0)
    close(fd);
  read_history(history_path);
}

static void close_history(void) {
  if (history_path != NULL)
    history_truncate_file(history_path, HISTORY_MAX);
  free(history_path);
  history_path = NULL;
  free_completions();
}

/* The REPL is for prototyping: the module is there as the global `nm`
** unless something already took that name. */
static void set_nm_global(lua_State *L) {
  if (lua_getglobal(L, "nm") == LUA_TNIL) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "neuromic");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) lua_setglobal(L, "nm");
    else lua_pop(L, 1);             /* the error shows up on first use */
  }
  lua_pop(L, 1);
}

/* The REPL's Lua side (nm.repl): the global help, unless something took
** the name, and the printer of results; without it, plain tostring. */
static void load_repl_module(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "nm.repl");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    report_message(progname, lua_pushfstring(L, "help is not available (%s)",
                                             lua_tostring(L, -1)));
    lua_pop(L, 2);
    return;
  }
  if (lua_getglobal(L, "help") == LUA_TNIL) {
    lua_getfield(L, -2, "help");
    lua_setglobal(L, "help");
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "show");
  lua_setfield(L, LUA_REGISTRYINDEX, REPL_SHOW_KEY);
  lua_pop(L, 1);
}

static void do_repl(lua_State *L) {
  int status;
  const char *oldprogname = progname;
  load_repl_module(L);
  progname = NULL;                  /* errors without a "neuromic:" prefix */
  use_readline = isatty(STDIN_FILENO);
  if (use_readline) {
    rl_readline_name = "neuromic";  /* for $if neuromic in ~/.inputrc */
    rl_catch_signals = 0;           /* Ctrl-C is ours (read_terminal_line) */
    rl_catch_sigwinch = 0;
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{(,)}[]+-*%^#~";
    rl_attempted_completion_function = attempt_completion;
    open_history();
  }
  globalL = L;
  while ((status = load_chunk(L)) != -1) {
    if (status == LUA_OK) {
      nm_interrupted = 0;           /* a stale Ctrl-C must not stop this line */
      status = docall(L, 0, LUA_MULTRET);
    }
    if (status == LUA_OK)
      print_results(L);
    else
      report(L, status);
  }
  lua_settop(L, 0);
  if (use_readline) {
    close_history();
    fputc('\n', stdout);
  }
  fflush(stdout);
  progname = oldprogname;
}

/* }====================================================== */


/* {======================================================
** Main
** ======================================================= */

/* --emit: nm.models.motif_net.emit(rule) prints the generated C; a rule that
** cannot be compiled is a user error: one line, exit status 2. */
static int emit_main(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "nm.models.motif_net");   /* the model whose rules compile */
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "emit");
  lua_pushstring(L, emit_rule);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {     /* no traceback: one line */
    const char *msg = lua_tostring(L, -1);
    report_message(progname, msg ? msg : "(error object is not a string)");
    exit_status = 2;
    return 0;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Runs in protected mode: the whole interpreter, as in lua.c's pmain. */
static int protected_main(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script = argc;
  int flags = collect_args(argv, &script);
  luaL_checkversion(L);
  if (argv[0] != NULL && argv[0][0] != '\0')
    progname = argv[0];
  if (flags & HAS_ERROR) {
    print_usage(argv[script]);
    return 0;
  }
  if (flags & HAS_HELP) {
    print_usage(NULL);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (flags & HAS_V)
    print_version();
  if (flags & HAS_BIG_E) {          /* the package library reads this flag */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, NOENV_KEY);
  }
  luaL_openlibs(L);
  preload_module(L);
  setup_paths(L);
  warn_if_stale(L);
  create_arg_table(L, argv, argc, script);
  set_nm_global(L);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (!(flags & HAS_BIG_E) && handle_luainit(L) != LUA_OK)
    return 0;
  if (!run_args(L, argv, script))
    return 0;
  if (flags & HAS_EMIT)
    return emit_main(L);
  if (script < argc && handle_script(L, argv + script) != LUA_OK)
    return 0;
  if (flags & HAS_I)
    do_repl(L);
  else if (script == argc && !(flags & (HAS_E | HAS_V))) {
    if (isatty(STDIN_FILENO)) {
      print_version();
      do_repl(L);
    }
    else if (dofile(L, NULL) != LUA_OK)
      return 0;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_NUM_THREADS when it
** loads, before main. When it fell back to kernels far below what this CPU
** can run (nm_math.h) and the user did not choose, name the right ones;
** when the user did not set its thread count, make it 1 (neuromic calls
** OpenBLAS at one thread and runs its own pool, nm.threads; at load
** OpenBLAS would otherwise start a thread per processor that spins for a
** while: 5-25 ms of CPU in every process, as much as a small sweep cell's
** work; nm.bench_direct_gemm still gets its threads, OpenBLAS starts them
** when asked). Then run this program again (children inherit the
** variables, so this happens once). */
static void choose_blas_setup(char **argv) {
  int core_set = 0, threads_set = 0;
  if (getenv("OPENBLAS_CORETYPE") == NULL) {
    const char *core = nm_blas_core_hint();
    core_set = core != NULL && setenv("OPENBLAS_CORETYPE", core, 1) == 0;
  }
  if (getenv("OPENBLAS_NUM_THREADS") == NULL)
    threads_set = setenv("OPENBLAS_NUM_THREADS", "1", 1) == 0;
  if (!core_set && !threads_set) return;
  execv("/proc/self/exe", argv);
  if (core_set) unsetenv("OPENBLAS_CORETYPE");     /* exec failed: go on as loaded */
  if (threads_set) unsetenv("OPENBLAS_NUM_THREADS");
}

int main(int argc, char **argv) {
  int status, ok;
  choose_blas_setup(argv);
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    report_message(argv[0], "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP);            /* no collection while setting up */
  lua_pushcfunction(L, protected_main);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  ok = lua_toboolean(L, -1);
  report(L, status);
  lua_close(L);
  if (exit_status >= 0)
    return exit_status;
  return (ok && status == LUA_OK) ? EXIT_SUCCESS : error_exit_status;
}

/* }====================================================== */
