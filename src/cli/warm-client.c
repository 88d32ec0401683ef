/*
 * virtmem-client: the thin front of the `virtmem` command (bin/virtmem execs it).
 *
 * Node needs ~100 ms to start on the machines we run on, a whole `virsh dominfo` ~40 ms, so
 * the short commands (dominfo, list, setmem, ...) are run by a warm process
 * (src/cli/warm-server.ts) that has the CLI loaded already; this program only forwards argv
 * over a unix socket and writes back what the warm process answers. It knows no command: the
 * warm process decides, and answers "run it yourself" for anything it does not serve (start,
 * define, waits, ...), which this program then does by exec'ing Node on the plain CLI, exactly
 * as if the warm process did not exist. It does the same when the warm process dies before the
 * command started, or before one that is safe to run again finished (it only reads, or sets an
 * absolute value: its output is held until the exit code comes, so nothing is printed twice); it
 * never runs a command again that a second run would repeat differently (undefine, destroy, a
 * monitor command). Protocol: src/cli/warm-protocol.ts.
 *
 * The warm process is started by the first invocation that finds none (that invocation runs the
 * plain CLI itself, like virsh starting a session libvirtd in the background) and exits after a
 * minute without requests. One warm process per user, build and environment: the
 * socket name carries the build id (dist/warm-id, new on every build) and a hash of the
 * environment variables the CLI reads, so a rebuilt CLI or another state directory never talks
 * to a process holding other code or other settings.
 *
 * VIRTMEM_WARM=0 bypasses the warm process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Must match src/cli/warm-protocol.ts. */
#define MAGIC "virtmem-warm 2"
static const char *const ENV_KEYS[] = {"VIRTMEM_STATE_DIR", "XDG_STATE_HOME", "HOME", "VIRTMEM_GUEST_DIR", "XDG_CACHE_HOME",
                                       "VIRTMEM_ACCEL", "VIRTMEM_QEMU", "VIRTMEM_KVM_DEVICE", "VIRTMEM_PROBE_CACHE",
                                       "LIBVIRT_DEFAULT_URI", "VIRTMEM_DAEMON"};
#define N_ENV_KEYS (sizeof ENV_KEYS / sizeof ENV_KEYS[0])

static char root[PATH_MAX];

/* Run the command without the warm process: Node on the plain CLI. Never returns. */
static void run_direct(int argc, char **argv) {
  char script[PATH_MAX + 32];
  snprintf(script, sizeof script, "%s/dist/src/cli/bin.js", root);
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (!args) { perror("virtmem"); exit(1); }
  args[0] = "node";
  args[1] = script;
  for (int i = 1; i < argc; i++) args[i + 1] = argv[i];
  execvp("node", args);
  fprintf(stderr, "error: cannot run node: %s\n", strerror(errno));
  exit(1);
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    p += w; n -= (size_t)w;
  }
  return 0;
}

/* 1 = all n bytes read, 0 = clean EOF before the first byte, -1 = error or EOF mid-way. */
static int read_all(int fd, char *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0) { if (errno == EINTR) continue; return -1; }
    if (r == 0) return got == 0 ? 0 : -1;
    got += (size_t)r;
  }
  return 1;
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 0x100000001b3ULL; }
  return h;
}

/* The per-user directory of warm sockets, created owner-only; NULL when it is not safe to use. */
static const char *socket_dir(void) {
  static char dir[PATH_MAX];
  uid_t uid = getuid();
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  if (uid == 0) snprintf(dir, sizeof dir, "/run/virtmem");
  else if (xdg && xdg[0] == '/') snprintf(dir, sizeof dir, "%s/virtmem", xdg);
  else snprintf(dir, sizeof dir, "/tmp/virtmem-%u", (unsigned)uid);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return NULL;
  struct stat st;
  /* Someone else's directory, or one others can write into, could hold a fake warm process. */
  if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != uid || (st.st_mode & 077) != 0) return NULL;
  return dir;
}

static int try_connect(const struct sockaddr_un *addr) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) { close(fd); return -1; }
  return fd;
}

/* Start the warm process detached from us (double fork + setsid), logging next to its socket. */
static void spawn_warm(const char *sock_path) {
  pid_t pid = fork();
  if (pid < 0) return;
  if (pid > 0) { waitpid(pid, NULL, 0); return; }
  if (fork() != 0) _exit(0);
  setsid();
  char log[PATH_MAX + 8], script[PATH_MAX + 40];
  snprintf(log, sizeof log, "%s.log", sock_path);
  snprintf(script, sizeof script, "%s/dist/src/cli/warm-server.js", root);
  /* Never keep the caller's stdout/stderr open: whoever reads them would wait for the warm
     process to exit. */
  int devnull = open("/dev/null", O_RDWR);
  int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (logfd < 0) logfd = devnull;
  if (devnull < 0 || logfd < 0) _exit(1);
  dup2(devnull, 0);
  dup2(logfd, 1);
  dup2(logfd, 2);
  if (chdir("/") != 0) _exit(1);
  char *args[] = {"node", script, "--socket", (char *)sock_path, NULL};
  execvp("node", args);
  _exit(127);
}

/* The command's output is held back until its exit code arrives, so that a rerunnable command
   whose warm process dies mid-way has printed nothing and can simply run again. Warm commands
   print little; past HOLD_MAX what is held is written and the rest streams (such a command is
   then not run again). Records: fd byte, 4-byte length, bytes. */
#define HOLD_MAX (1u << 20)
static char *held;
static size_t held_len;
static int streaming;

/* Write what is held, in order, and stop holding. */
static void release_held(void) {
  for (size_t i = 0; i < held_len;) {
    uint32_t n;
    memcpy(&n, held + i + 1, sizeof n);
    (void)write_all(held[i], held + i + 5, n);
    i += 5 + n;
  }
  held_len = 0;
}

/* Output for `out_fd` (1 or 2): held while it fits, else written. */
static void emit(int out_fd, const char *p, size_t n) {
  if (!streaming && !held) held = malloc(HOLD_MAX);
  if (!streaming && held && held_len + 5 + n <= HOLD_MAX) {
    uint32_t n32 = (uint32_t)n;
    held[held_len] = (char)out_fd;
    memcpy(held + held_len + 1, &n32, sizeof n32);
    memcpy(held + held_len + 5, p, n);
    held_len += 5 + n;
    return;
  }
  release_held();
  streaming = 1;
  (void)write_all(out_fd, p, n);
}

/* A request: NUL-terminated fields (see warm-protocol.ts). */
static char *build_request(int argc, char **argv, size_t *len) {
  size_t cap = 256;
  for (int i = 1; i < argc; i++) cap += strlen(argv[i]) + 1;
  for (size_t k = 0; k < N_ENV_KEYS; k++) { const char *v = getenv(ENV_KEYS[k]); cap += strlen(ENV_KEYS[k]) + (v ? strlen(v) : 0) + 3; }
  char *buf = malloc(cap), *p = buf;
  if (!buf) return NULL;
  p += sprintf(p, "%s", MAGIC) + 1;
  p += sprintf(p, "%d", isatty(2) ? 1 : 0) + 1;
  p += sprintf(p, "%zu", N_ENV_KEYS) + 1;
  for (size_t k = 0; k < N_ENV_KEYS; k++) {
    const char *v = getenv(ENV_KEYS[k]);
    /* '=' marks a set variable, '-' an unset one (unset and empty differ for the CLI). */
    p += sprintf(p, "%s%c%s", ENV_KEYS[k], v ? '=' : '-', v ? v : "") + 1;
  }
  p += sprintf(p, "%d", argc - 1) + 1;
  for (int i = 1; i < argc; i++) p += sprintf(p, "%s", argv[i]) + 1;
  *len = (size_t)(p - buf);
  return buf;
}

int main(int argc, char **argv) {
  ssize_t n = readlink("/proc/self/exe", root, sizeof root - 1);
  const char *suffix = "/dist/virtmem-client";
  if (n <= (ssize_t)strlen(suffix)) { fprintf(stderr, "error: cannot locate virtmem\n"); return 1; }
  root[n - (ssize_t)strlen(suffix)] = '\0';

  const char *warm = getenv("VIRTMEM_WARM");
  if (warm && strcmp(warm, "0") == 0) run_direct(argc, argv);

  char id[65] = {0}, idpath[PATH_MAX + 16];
  snprintf(idpath, sizeof idpath, "%s/dist/warm-id", root);
  int idfd = open(idpath, O_RDONLY | O_CLOEXEC);
  if (idfd < 0) run_direct(argc, argv);
  ssize_t idn = read(idfd, id, sizeof id - 1);
  close(idfd);
  while (idn > 0 && (id[idn - 1] == '\n' || id[idn - 1] == ' ')) id[--idn] = '\0';
  if (idn <= 0 || strspn(id, "0123456789abcdef") != (size_t)idn) run_direct(argc, argv);

  const char *dir = socket_dir();
  if (!dir) run_direct(argc, argv);
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t k = 0; k < N_ENV_KEYS; k++) {
    const char *v = getenv(ENV_KEYS[k]);
    h = fnv1a(h, v ? "=" : "-", 1);
    if (v) h = fnv1a(h, v, strlen(v) + 1);
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int pl = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/cli-%s-%016llx.sock", dir, id, (unsigned long long)h);
  if (pl < 0 || (size_t)pl >= sizeof addr.sun_path) run_direct(argc, argv);

  int fd = try_connect(&addr);
  if (fd < 0) {
    /* No warm process yet: start one for the next invocations and run this one ourselves, which
       costs what the plain CLI costs (waiting for the warm process would cost more). */
    if (errno == ENOENT || errno == ECONNREFUSED) spawn_warm(addr.sun_path);
    run_direct(argc, argv);
  }

  signal(SIGPIPE, SIG_IGN); /* a closed stdout must not kill us before the exit code arrives */
  size_t reqlen;
  char *req = build_request(argc, argv, &reqlen);
  if (!req || write_all(fd, req, reqlen) != 0) run_direct(argc, argv);
  free(req);

  /* Frames: 1 byte type, 4 bytes big-endian length, payload. The first is 'r' (run it
     yourself) or 's' (started; payload 'r' when running it again is harmless). */
  static char buf[65536];
  int started = 0, rerunnable = 0;
  for (;;) {
    unsigned char head[5];
    if (read_all(fd, (char *)head, sizeof head) != 1) break;
    uint32_t len = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 | head[4];
    char type = (char)head[0];
    if (!started) {
      if (type == 'r') { close(fd); run_direct(argc, argv); }
      started = 1; /* from here on the command may be running */
      if (type != 's' || len != 1 || read_all(fd, buf, 1) != 1) break;
      rerunnable = buf[0] == 'r';
      continue;
    }
    if (type == 'x') {
      if (len != 1 || read_all(fd, buf, 1) != 1) break;
      release_held();
      return (unsigned char)buf[0];
    }
    while (len > 0) {
      ssize_t r = read(fd, buf, len < sizeof buf ? len : sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) goto lost;
      if (type == '1' || type == '2') emit(type == '1' ? 1 : 2, buf, (size_t)r);
      len -= (uint32_t)r;
    }
  }
lost:
  /* The warm process went away before the exit code (killed, out of memory). Exactly once
     (warm-protocol.ts): with no 's' frame the command never started, and a rerunnable command
     (reads, or sets an absolute value) that printed nothing yet (its output is held until the
     exit code) is harmless to run again; anything else may have taken effect, so it is not run again and the caller is
     told. */
  close(fd);
  if (!started || (rerunnable && !streaming)) run_direct(argc, argv);
  release_held();
  if (rerunnable)
    fprintf(stderr, "error: the virtmem warm process died before the command finished: the output above is incomplete (see %s.log)\n", addr.sun_path);
  else
    fprintf(stderr, "error: the virtmem warm process died while running the command, which may or may not have taken effect; it was not run again: check before repeating it (see %s.log)\n", addr.sun_path);
  return 1;
}
