/*
** nm_sys.h: operating-system services of the experiment harness:
** crash-safe file replacement, CRC32, a monotonic clock, a stop flag set
** by SIGINT/SIGTERM, and worker processes. Never includes lua.h.
*/
#ifndef NM_SYS_H
#define NM_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Replaces `path` with `len` bytes so that a crash at any moment leaves
** either the old or the new contents, never a mix: writes a temporary
** file in the same directory, fsyncs it, renames it over `path` and
** fsyncs the directory. When `backup` is not NULL an existing `path` is
** first renamed to `backup` (after the new data is safely on disk).
** Returns 0 or an errno value; *step names the failing operation
** ("open", "write", "fsync", "rename", ...). No temporary file is left
** behind on failure. */
int nm_atomic_write(const char *path, const void *data, size_t len,
                    const char *backup, const char **step);
/* The same in steps, for writers that stream: nm_atomic_open creates the
** temporary "<path>.tmp-<pid>-<n>" (permissions `mode`, less the umask)
** and returns 0 with *fd and *tmp, or an errno value; then either
** nm_atomic_commit (fsync, close, backup, rename, fsync the directory; 0
** or an errno value with *step; removes the temporary on failure) or
** nm_atomic_abort (close, remove the temporary). Both free *tmp. */
int nm_atomic_open(const char *path, unsigned mode, char **tmp, int *fd);
int nm_atomic_commit(int fd, char *tmp, const char *path, const char *backup,
                     const char **step);
void nm_atomic_abort(int fd, char *tmp);

/* Appends `len` bytes to `path` (created if missing), whole or not at
** all: after a failed write the file is cut back to its old size.
** Returns 0 or an errno value; *step names the failing operation. */
int nm_append(const char *path, const void *data, size_t len, const char **step);

/* CRC-32 (zlib's polynomial) of len bytes, continuing from crc (0 to
** start). */
uint32_t nm_crc32(uint32_t crc, const void *data, size_t len);

/* FNV-1a, 64 bits, of len bytes (the rule compiler's cache keys). */
uint64_t nm_fnv1a64(const void *data, size_t len);

/* Seconds from an arbitrary fixed point, never going backwards. */
double nm_clock_monotonic(void);
/* CPU seconds of the calling thread (CLOCK_THREAD_CPUTIME_ID); -1 when
** the clock cannot be read. */
double nm_thread_cpu(void);

/* CPU seconds (user, system) used so far by the children of this process
** that have ended and been waited for (with theirs: getrusage
** RUSAGE_CHILDREN). The difference around one nm_wait that reaps one
** worker is that worker's CPU time. Returns -1 (errno set) on failure. */
int nm_children_cpu(double *user, double *sys);

/* 1 when fd refers to a terminal. */
int nm_isatty(int fd);

/* Sleeps for `seconds`; returns the seconds left when a signal cut the
** sleep short (0 when it ran to the end). */
double nm_sleep(double seconds);

/* The stop flag. nm_stop_install() sets handlers for SIGINT and SIGTERM
** that only record the signal, so a long run can checkpoint and exit at
** a safe point; a second signal while a stop is pending restores the
** default action and re-raises it (a second Ctrl-C kills at once).
** Blocking calls are not restarted (no SA_RESTART), so nm_wait and
** nm_sleep return early. Returns 0 or an errno value. */
int nm_stop_install(void);
/* Restores the handlers that were there before nm_stop_install. */
void nm_stop_uninstall(void);
/* The signal number that requested a stop, or 0. */
int nm_stop_signal(void);
void nm_stop_clear(void);

/* Creates directory `path` and, if `parents`, its missing parents
** (mkdir -p). An existing directory is not an error; "" is (ENOENT).
** Returns 0 or an errno value. */
int nm_mkdir(const char *path, int parents);

/* An exclusive advisory lock (flock) on file `path`, created if missing,
** held until nm_unlock or the process ends (a dead holder's lock is free
** again). On success the file holds `text` (who holds it) and *fd_out
** is the open descriptor. Returns 0, EWOULDBLOCK when another open file
** holds the lock, or an errno value. */
int nm_lock(const char *path, const void *text, size_t len, int *fd_out);
/* Releases a lock from nm_lock and removes its file. */
void nm_unlock(const char *path, int fd);

/* Calls each(ctx, name) for every entry of directory `path` but "." and
** "..", in the order the system gives, until it returns non-zero.
** Returns 0, each's value or an errno value. */
int nm_listdir(const char *path, int (*each)(void *ctx, const char *name), void *ctx);

/* Starts argv[0] (searched in PATH) with arguments argv (NULL-ended),
** stdout and stderr appended to `log_path` (inherited when NULL).
** Returns 0 and sets *pid, or an errno value. */
int nm_spawn(const char *const *argv, const char *log_path, pid_t *pid);

/* Waits for child `pid` (any child when pid <= 0); with `nohang`, returns
** at once. Returns 0 and sets *done (0 when nothing finished yet), *exit
** (exit status, or 128 + signal number when killed by a signal) and
** *killed_by (signal number or 0); or an errno value (EINTR when a
** signal arrived, ECHILD when there is no such child). */
int nm_wait(pid_t pid, int nohang, pid_t *done, int *exit_status, int *killed_by);

/* Shared objects (compiled rule kernels). nm_dl_open loads `path`
** (symbols resolved now, kept local to it) and returns a handle, or NULL
** with the loader's message in err. nm_dl_sym returns the address of
** `name` in it or NULL. nm_dl_close unloads it. */
void *nm_dl_open(const char *path, char *err, size_t errlen);
void *nm_dl_sym(void *handle, const char *name);
/* The same for a function (ISO C has no object-to-function pointer cast). */
typedef void (*nm_dl_func)(void);
nm_dl_func nm_dl_function(void *handle, const char *name);
void nm_dl_close(void *handle);

#endif
