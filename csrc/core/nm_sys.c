/*
** nm_sys.c: operating-system services of the experiment harness (see
** nm_sys.h): atomic file replacement, CRC32, clock, stop flag, worker
** processes.
*/
#include "nm_sys.h"
#include "nm_simd.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

extern char **environ;

/* ---------------------------------------------------------------------- */
/* Atomic replacement                                                      */

/* write(2) until everything is out; regular files rarely write short,
** but a signal or a full quota can. */
static int write_all(int fd, const unsigned char *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* fsync of the directory holding `path`, so the rename itself survives
** a power loss. File systems that cannot sync directories say EINVAL. */
static int sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (slash == NULL) {
    dir = malloc(2);
    if (dir == NULL) return ENOMEM;
    strcpy(dir, ".");
  } else {
    size_t n = (slash == path) ? 1 : (size_t)(slash - path);
    dir = malloc(n + 1);
    if (dir == NULL) return ENOMEM;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  int fd = open(dir, O_RDONLY | O_CLOEXEC);
  int err = 0;
  if (fd < 0) err = errno;
  else {
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) err = errno;
    close(fd);
  }
  free(dir);
  return err;
}

int nm_atomic_open(const char *path, unsigned mode, char **tmp, int *fd) {
  size_t plen = strlen(path);
  char *name = malloc(plen + 48);
  *tmp = NULL;
  *fd = -1;
  if (name == NULL) return ENOMEM;
  /* The temporary lives next to `path` (rename is atomic only within one
  ** file system); pid and a counter make its name unique. */
  for (unsigned n = 0; *fd < 0; n++) {
    snprintf(name, plen + 48, "%s.tmp-%ld-%u", path, (long)getpid(), n);
    *fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
    if (*fd < 0 && (errno != EEXIST || n >= 1000)) {
      int err = errno;
      free(name);
      return err;
    }
  }
  *tmp = name;
  return 0;
}

void nm_atomic_abort(int fd, char *tmp) {
  if (fd >= 0) close(fd);
  if (tmp != NULL) unlink(tmp);
  free(tmp);
}

int nm_atomic_commit(int fd, char *tmp, const char *path, const char *backup,
                     const char **step) {
  int err = 0;
  *step = "fsync";
  if (fsync(fd) != 0) err = errno;
  if (close(fd) != 0 && err == 0) {
    *step = "close";
    err = errno;
  }
  if (err == 0 && backup != NULL) {
    struct stat st;
    *step = "rename to backup";
    /* No old file, no backup; any other failure keeps the old file. */
    if (stat(path, &st) == 0) {
      if (rename(path, backup) != 0) err = errno;
    } else if (errno != ENOENT) {
      err = errno;
    }
  }
  if (err == 0) {
    *step = "rename";
    if (rename(tmp, path) != 0) err = errno;
  }
  if (err != 0) {
    nm_atomic_abort(-1, tmp);
    return err;
  }
  free(tmp);
  *step = "fsync directory";
  return sync_parent_dir(path);
}

int nm_atomic_write(const char *path, const void *data, size_t len,
                    const char *backup, const char **step) {
  char *tmp;
  int fd;
  *step = "open";
  int err = nm_atomic_open(path, 0666, &tmp, &fd);
  if (err != 0) return err;
  *step = "write";
  err = write_all(fd, data, len);
  if (err != 0) {
    nm_atomic_abort(fd, tmp);
    return err;
  }
  return nm_atomic_commit(fd, tmp, path, backup, step);
}

int nm_append(const char *path, const void *data, size_t len, const char **step) {
  struct stat st;
  int err = 0;
  *step = "open";
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return errno;
  *step = "stat";
  if (fstat(fd, &st) != 0) err = errno;
  if (err == 0) {
    *step = "write";
    err = write_all(fd, data, len);
    /* A short write leaves part of the data: cut the file back (a reader
    ** drops an incomplete last line should this fail too). */
    if (err != 0 && ftruncate(fd, st.st_size) != 0) { /* nothing more to do */ }
  }
  if (close(fd) != 0 && err == 0) {
    *step = "close";
    err = errno;
  }
  return err;
}

/* ---------------------------------------------------------------------- */
/* Checksum, clock, terminal, sleep                                       */

uint32_t nm_crc32(uint32_t crc, const void *data, size_t len) {
  const unsigned char *p = data;
  uLong c = crc;
  while (len > 0) {   /* zlib takes uInt lengths: feed large buffers in chunks */
    uInt n = len > (size_t)UINT_MAX ? UINT_MAX : (uInt)len;
    c = crc32(c, p, n);
    p += n;
    len -= n;
  }
  return (uint32_t)c;
}

int nm_isa_level(int set) {
#if NM_HAVE_CLONES
  __builtin_cpu_init();
  if (set >= NM_CLONES_V4 && NM_CLONES_MAX >= 4 && __builtin_cpu_supports("x86-64-v4"))
    return 4;
  if (set >= NM_CLONES_V3 && __builtin_cpu_supports("x86-64-v3")) return 3;
#else
  (void)set;
#endif
  return 0;
}

double nm_clock_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double nm_thread_cpu(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1.0;
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int nm_children_cpu(double *user, double *sys) {
  struct rusage ru;
  if (getrusage(RUSAGE_CHILDREN, &ru) != 0) return -1;
  *user = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec;
  *sys = (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
  return 0;
}

int nm_isatty(int fd) {
  return isatty(fd) == 1;
}

double nm_sleep(double seconds) {
  if (!(seconds > 0)) return 0;
  struct timespec req, rem;
  req.tv_sec = (time_t)seconds;
  req.tv_nsec = (long)((seconds - (double)req.tv_sec) * 1e9);
  if (req.tv_nsec >= 1000000000L) req.tv_nsec = 999999999L;
  if (nanosleep(&req, &rem) != 0 && errno == EINTR)
    return (double)rem.tv_sec + 1e-9 * (double)rem.tv_nsec;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Stop flag                                                               */

/* Signal handlers can reach only globals: the pending stop signal and the
** handlers to restore are the harness's only global state. */
static volatile sig_atomic_t stop_signal = 0;
static struct sigaction saved_int, saved_term;
static int stop_installed = 0;

static void on_stop_signal(int sig) {
  /* A second Ctrl-C means "now": default action, re-raised. A repeated
  ** SIGTERM (batch systems and the sweep runner may both send one) only
  ** keeps the request pending. */
  if (stop_signal != 0 && sig == SIGINT) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  if (stop_signal == 0) stop_signal = sig;
}

int nm_stop_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;               /* no SA_RESTART: waits return EINTR */
  stop_signal = 0;
  if (!stop_installed) {
    if (sigaction(SIGINT, &sa, &saved_int) != 0) return errno;
    if (sigaction(SIGTERM, &sa, &saved_term) != 0) {
      int err = errno;
      sigaction(SIGINT, &saved_int, NULL);
      return err;
    }
    stop_installed = 1;
  } else {
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
  }
  return 0;
}

void nm_stop_uninstall(void) {
  if (!stop_installed) return;
  sigaction(SIGINT, &saved_int, NULL);
  sigaction(SIGTERM, &saved_term, NULL);
  stop_installed = 0;
}

int nm_stop_signal(void) {
  return (int)stop_signal;
}

void nm_stop_clear(void) {
  stop_signal = 0;
}

/* ---------------------------------------------------------------------- */
/* Directories and processes                                               */

static int mkdir_one(const char *path) {
  struct stat st;
  if (mkdir(path, 0777) == 0) return 0;
  int err = errno;
  if (err == EEXIST) {
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return ENOTDIR;
  }
  return err;
}

int nm_mkdir(const char *path, int parents) {
  if (path[0] == '\0') return ENOENT;        /* "" is no directory */
  if (!parents) return mkdir_one(path);
  size_t n = strlen(path);
  char *p = malloc(n + 1);
  if (p == NULL) return ENOMEM;
  memcpy(p, path, n + 1);
  int err = 0;
  /* Create each prefix ending before a '/', then the whole path. */
  for (size_t i = 1; i <= n && err == 0; i++) {
    if (p[i] == '/' || p[i] == '\0') {
      if (p[i - 1] == '/') continue;         /* "a//b" */
      char saved = p[i];
      p[i] = '\0';
      err = mkdir_one(p);
      p[i] = saved;
    }
  }
  free(p);
  return err;
}

int nm_spawn(const char *const *argv, const char *log_path, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t defaults;
  int err;
  /* posix_spawnp wants char *const[]; it does not write through it. */
  union { const char *const *c; char *const *m; } args;
  args.c = argv;
  if ((err = posix_spawn_file_actions_init(&fa)) != 0) return err;
  if ((err = posix_spawnattr_init(&attr)) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    return err;
  }
  /* Workers read nothing from the terminal, log to their own file, run
  ** in their own process group (a Ctrl-C reaches only the runner, which
  ** forwards one SIGTERM) and start with default INT/TERM actions. */
  err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (err == 0 && log_path != NULL) {
    err = posix_spawn_file_actions_addopen(&fa, 1, log_path,
                                           O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (err == 0) err = posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  if (err == 0) err = posix_spawnattr_setsigdefault(&attr, &defaults);
  if (err == 0) err = posix_spawnattr_setpgroup(&attr, 0);
  if (err == 0)
    err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
  if (err == 0) err = posix_spawnp(pid, argv[0], &fa, &attr, args.m, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  return err;
}

int nm_wait(pid_t pid, int nohang, pid_t *done, int *exit_status, int *killed_by) {
  int st = 0;
  pid_t r = waitpid(pid > 0 ? pid : -1, &st, nohang ? WNOHANG : 0);
  *done = 0;
  *exit_status = 0;
  *killed_by = 0;
  if (r < 0) return errno;
  if (r == 0) return 0;
  *done = r;
  if (WIFEXITED(st)) *exit_status = WEXITSTATUS(st);
  else if (WIFSIGNALED(st)) {
    *killed_by = WTERMSIG(st);
    *exit_status = 128 + *killed_by;
  }
  return 0;
}

uint64_t nm_fnv1a64(const void *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* ---------------------------------------------------------------------- */
/* Locks and directory listings                                            */

int nm_lock(const char *path, const void *text, size_t len, int *fd_out) {
  for (int tries = 0; tries < 100; tries++) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      close(fd);
      return err == EWOULDBLOCK ? EWOULDBLOCK : err;
    }
    /* The holder we waited for may have removed the file before we
    ** locked it: then the lock is on a name nobody sees; start again. */
    struct stat a, b;
    if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino ||
        a.st_dev != b.st_dev) {
      close(fd);
      continue;
    }
    int err = 0;
    if (ftruncate(fd, 0) != 0) err = errno;
    if (err == 0) err = write_all(fd, text, len);
    if (err != 0) {
      unlink(path);
      close(fd);
      return err;
    }
    *fd_out = fd;
    return 0;
  }
  return EWOULDBLOCK;
}

void nm_unlock(const char *path, int fd) {
  unlink(path);                  /* first, so no one locks the old file */
  close(fd);
}

int nm_listdir(const char *path, int (*each)(void *ctx, const char *name), void *ctx) {
  DIR *d = opendir(path);
  if (d == NULL) return errno;
  int err = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (e == NULL) {
      err = errno;
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if ((err = each(ctx, e->d_name)) != 0) break;
  }
  closedir(d);
  return err;
}

/* ---------------------------------------------------------------------- */
/* Shared objects */

void *nm_dl_open(const char *path, char *err, size_t errlen) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *msg = dlerror();
    snprintf(err, errlen, "%s", msg ? msg : "cannot load");
  }
  return h;
}

void *nm_dl_sym(void *handle, const char *name) {
  return dlsym(handle, name);
}

nm_dl_func nm_dl_function(void *handle, const char *name) {
  void *p = dlsym(handle, name);
  nm_dl_func f = NULL;
  if (p) memcpy(&f, &p, sizeof f);
  return f;
}

void nm_dl_close(void *handle) {
  if (handle) dlclose(handle);
}
