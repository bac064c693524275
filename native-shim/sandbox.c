// vfsd's sandbox, linked into the NativeAOT vfsd and run as an ELF constructor, before main() and so before the .NET
// runtime exists.
//
// Why here and not in C#: by the time Main runs, the runtime has started threads (finalizer, signal handling, GC).
// unshare(CLONE_NEWUSER) refuses a multi-threaded process, and capabilities (capset, PR_CAPBSET_DROP) and the mount
// namespace entered by unshare(CLONE_NEWNS) belong to the calling thread only: a capability drop in Main would leave
// the runtime's other threads fully privileged. Why not a separate launcher that sets up and then execs vfsd: after
// pivot_root into the shared directory the dynamic loader (PT_INTERP) and libc are no longer reachable, so nothing
// dynamically linked can be exec'd there. So vfsd parses its command line in C#, opens what must be opened on the
// host (the vhost-user socket and its pid lock), writes the resolved plan into VFSD_SANDBOX and re-executes itself
// (/proc/self/exe); this constructor then runs the plan single-threaded, with libc already loaded, and returns into
// the runtime inside the sandbox (src/VirtioFs.Daemon/Sandbox/SandboxLauncher.cs). Modelled on Rust virtiofsd 1.13
// (src/sandbox.rs: setup_mounts, enter_namespace, enter_chroot; src/main.rs: drop_capabilities; src/seccomp.rs).
//
// The plan is one line per item, "key value":
//   mode namespace|chroot|none     what to enter
//   userns 1                       namespace, not root: a user namespace first (virtiofsd's unprivileged mode)
//   uidmap IN OUT COUNT / gidmap   its maps (repeatable; none: the caller's own id mapped to itself)
//   root DIR                       namespace/chroot: the shared directory becomes "/"
//   bind DIR-OR-FILE / bindro ...  namespace without root: a tmpfs root holding only these, at their host paths
//   cwd DIR                        the working directory inside a tmpfs root
//   net 0|1                        namespace: 1 also unshares the network namespace
//   preload SONAME                 dlopen it now (registry images: .NET loads libssl/libcrypto on first use, by then
//                                  after pivot_root; a library already loaded is found by its soname, not on disk)
//   listenfd N                     the waiting parent closes it (the daemon serves it)
//   unlink PATH                    the waiting parent removes it when the daemon is gone (socket, pid file)
//   caps HEX                       capability bits kept (effective = permitted, bounding set cut to them)
//   seccomp kill|log|trap|none     the filter's action for a syscall off the list (seccomp_x86_64.list)
// On success VFSD_SANDBOX is replaced by VFSD_SANDBOX_ACTIVE ("mode=...,procfd=N,root=0|1"); any failure prints one
// line and exits 1 before the runtime starts.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <dirent.h>
#include <dlfcn.h>
#include <unistd.h>

#define MAX_ITEMS 32
#define MAX_MAPS 16

struct idmap {
    unsigned inside, outside, count;
};

struct plan {
    const char *mode;
    int userns;
    struct idmap uidmap[MAX_MAPS], gidmap[MAX_MAPS];
    int nuidmap, ngidmap;
    const char *root;
    const char *binds[MAX_ITEMS];
    int bind_ro[MAX_ITEMS];
    int nbinds;
    const char *cwd;
    const char *unlinks[4];
    int nunlinks;
    const char *preloads[4];
    int npreloads;
    int net;
    int listenfd;
    uint64_t caps;
    int caps_given;
    const char *seccomp;
};

static void die(const char *what) __attribute__((noreturn));
static void die(const char *what)
{
    dprintf(2, "vfsd: sandbox: %s: %s\n", what, strerror(errno));
    _exit(1);
}

static void fail(const char *what) __attribute__((noreturn));
static void fail(const char *what)
{
    dprintf(2, "vfsd: sandbox: %s\n", what);
    _exit(1);
}

static void parse_plan(char *text, struct plan *p)
{
    memset(p, 0, sizeof *p);
    p->listenfd = -1;
    p->seccomp = "none";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *value = strchr(line, ' ');
        if (!value) fail("malformed plan line");
        *value++ = 0;
        if (!strcmp(line, "mode")) p->mode = value;
        else if (!strcmp(line, "root")) p->root = value;
        else if (!strcmp(line, "bind") || !strcmp(line, "bindro")) {
            if (p->nbinds == MAX_ITEMS) fail("too many bind mounts");
            p->bind_ro[p->nbinds] = line[4] == 'r';
            p->binds[p->nbinds++] = value;
        }
        else if (!strcmp(line, "cwd")) p->cwd = value;
        else if (!strcmp(line, "preload")) {
            if (p->npreloads == 4) fail("too many preloads");
            p->preloads[p->npreloads++] = value;
        }
        else if (!strcmp(line, "userns")) p->userns = atoi(value);
        else if (!strcmp(line, "uidmap") || !strcmp(line, "gidmap")) {
            int uid = line[0] == 'u';
            int *n = uid ? &p->nuidmap : &p->ngidmap;
            struct idmap *m = uid ? p->uidmap : p->gidmap;
            if (*n == MAX_MAPS) fail("too many id maps");
            if (sscanf(value, "%u %u %u", &m[*n].inside, &m[*n].outside, &m[*n].count) != 3) fail("malformed id map");
            (*n)++;
        }
        else if (!strcmp(line, "net")) p->net = atoi(value);
        else if (!strcmp(line, "listenfd")) p->listenfd = atoi(value);
        else if (!strcmp(line, "unlink")) {
            if (p->nunlinks == 4) fail("too many unlink paths");
            p->unlinks[p->nunlinks++] = value;
        }
        else if (!strcmp(line, "caps")) { p->caps = strtoull(value, NULL, 16); p->caps_given = 1; }
        else if (!strcmp(line, "seccomp")) p->seccomp = value;
        else fail("unknown plan key");
    }
    if (!p->mode) fail("plan without a mode");
}

// The runtime must not exist yet: every guarantee below holds for the calling thread only.
static void require_single_thread(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return; // no /proc: nothing could have started threads we would not know of
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] != '.') n++;
    }
    closedir(d);
    if (n != 1) fail("the process already has threads; the sandbox must be set up before any");
}

// ---- the waiting parent (virtiofsd util.rs wait_for_child) ----

static volatile pid_t child_pid;

static void forward(int sig)
{
    if (child_pid > 0) kill(child_pid, sig);
}

// The parent stays in the host's pid namespace: Kata and the tests know it by pid (and by the pid file), signal it
// and wait for it. It forwards the polite signals, and when it is killed outright (Kata sends SIGKILL) the child's
// PR_SET_PDEATHSIG takes the daemon down with it; as pid 1 of its namespace its death ends every process in there.
static void wait_for_child(const struct plan *p, pid_t pid) __attribute__((noreturn));
static void wait_for_child(const struct plan *p, pid_t pid)
{
    child_pid = pid;
    if (p->listenfd >= 0) close(p->listenfd); // only the daemon accepts; a second client must not hang on a dead queue
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
    int status;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    // The daemon cannot reach these from inside its root: the parent, still in the host's view, removes them.
    for (int i = 0; i < p->nunlinks; i++) unlink(p->unlinks[i]);
    if (r < 0) _exit(1);
    if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        // Die of the same signal, so whoever waits for us sees what happened to the daemon.
        int sig = WTERMSIG(status);
        signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    _exit(1);
}

// As pid 1 of its namespace the daemon ignores every signal it has no handler for, and the runtime installs its
// handlers only later: a SIGTERM forwarded in that window would be lost. Until the runtime replaces it (and for the
// signals it leaves alone) this one ends the daemon as the default action would have.
static void early_signal(int sig)
{
    _exit(128 + sig);
}

static void fork_daemon(const struct plan *p)
{
    // A pipe whose write end only the parent holds: if the parent dies before the child has asked for
    // PR_SET_PDEATHSIG, the child sees the hang-up and leaves instead of living on unwatched.
    int alive[2];
    if (pipe2(alive, O_CLOEXEC) != 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) {
        close(alive[0]);
        wait_for_child(p, pid); // keeps alive[1] open until it exits
    }
    close(alive[1]);
    // SIGKILL, not SIGTERM: as pid 1 of its namespace the daemon ignores any signal it has no handler for yet.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("PR_SET_PDEATHSIG");
    int stop[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT };
    for (size_t i = 0; i < sizeof stop / sizeof stop[0]; i++) signal(stop[i], early_signal);
    struct pollfd pfd = { .fd = alive[0], .events = POLLIN };
    if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR))) _exit(1);
    close(alive[0]);
}

// ---- the user namespace of an unprivileged daemon (virtiofsd sandbox.rs enter_namespace, setup_id_mappings) ----

// newuidmap/newgidmap PID IN OUT COUNT...: the setuid helpers of the uidmap package, which check /etc/subuid and
// /etc/subgid; needed for anything beyond mapping oneself (user_namespaces(7): an unprivileged writer may map only
// its own id, once).
static int run_idmap_tool(const char *tool, pid_t target, const struct idmap *m, int n)
{
    char args[2 + 3 * MAX_MAPS][16];
    char *argv[2 + 3 * MAX_MAPS + 1];
    int k = 0;
    snprintf(args[k], sizeof args[k], "%s", tool);
    argv[k] = args[k]; k++;
    snprintf(args[k], sizeof args[k], "%d", (int)target);
    argv[k] = args[k]; k++;
    for (int i = 0; i < n; i++) {
        unsigned v[3] = { m[i].inside, m[i].outside, m[i].count };
        for (int j = 0; j < 3; j++, k++) {
            snprintf(args[k], sizeof args[k], "%u", v[j]);
            argv[k] = args[k];
        }
    }
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        execvp(tool, argv);
        dprintf(2, "vfsd: sandbox: cannot run %s (install the uidmap package): %s\n", tool, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return 0;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dprintf(2, "vfsd: sandbox: %s failed (are the ranges in /etc/subuid and /etc/subgid?)\n", tool);
        return 0;
    }
    return 1;
}

static int write_proc(pid_t target, const char *file, const char *text)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)target, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        dprintf(2, "vfsd: sandbox: open %s: %s\n", path, strerror(errno));
        return 0;
    }
    ssize_t len = (ssize_t)strlen(text);
    int ok = write(fd, text, (size_t)len) == len;
    if (!ok) dprintf(2, "vfsd: sandbox: write %s: %s\n", path, strerror(errno));
    close(fd);
    return ok;
}

// One id kind: written directly when it maps only our own id once (what an unprivileged writer may do), else by the
// setuid tool. gid_map needs setgroups "deny" first when written directly.
static int set_idmap(pid_t target, int gid, const struct idmap *m, int n, unsigned own)
{
    if (n != 1 || m[0].outside != own || m[0].count > 1) return run_idmap_tool(gid ? "newgidmap" : "newuidmap", target, m, n);
    if (gid && !write_proc(target, "setgroups", "deny")) return 0;
    char line[48];
    snprintf(line, sizeof line, "%u %u 1\n", m[0].inside, m[0].outside);
    return write_proc(target, gid ? "gid_map" : "uid_map", line);
}

// The maps of a user namespace must be written from outside it (newuidmap runs in the parent namespace): a helper is
// forked first, the caller unshares, the helper writes the caller's maps and reports, and the caller becomes root
// of the namespace, which gives it every capability there for the mounts that follow.
static void enter_user_namespace(const struct plan *p)
{
    unsigned uid = (unsigned)geteuid(), gid = (unsigned)getegid();
    struct idmap own_uid = { uid, uid, 1 }, own_gid = { gid, gid, 1 };
    int go[2], done[2];
    if (pipe2(go, O_CLOEXEC) != 0 || pipe2(done, O_CLOEXEC) != 0) die("pipe");
    pid_t helper = fork();
    if (helper < 0) die("fork");
    if (helper == 0) {
        close(go[1]);
        close(done[0]);
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1); // the caller failed to unshare, or died
        pid_t target = getppid();
        int ok = set_idmap(target, 0, p->nuidmap ? p->uidmap : &own_uid, p->nuidmap ? p->nuidmap : 1, uid)
              && set_idmap(target, 1, p->ngidmap ? p->gidmap : &own_gid, p->ngidmap ? p->ngidmap : 1, gid);
        if (ok && write(done[1], "d", 1) != 1) ok = 0;
        _exit(ok ? 0 : 1);
    }
    close(go[0]);
    close(done[1]);
    if (unshare(CLONE_NEWUSER) != 0) die("unshare(CLONE_NEWUSER) (unprivileged user namespaces not allowed here? --sandbox none runs without)");
    if (write(go[1], "g", 1) != 1) die("signal the id-map helper");
    char c;
    if (read(done[0], &c, 1) != 1) fail("the user namespace's uid/gid maps could not be set (see above)");
    while (waitpid(helper, NULL, 0) < 0 && errno == EINTR) {}
    close(go[1]);
    close(done[0]);
    // As virtiofsd: root of the namespace if 0 is mapped; otherwise carry on as the mapped id (it warns too).
    if (setresgid(0, 0, 0) != 0) dprintf(2, "vfsd: sandbox: gid 0 is not mapped in the user namespace: %s\n", strerror(errno));
    if (setresuid(0, 0, 0) != 0) dprintf(2, "vfsd: sandbox: uid 0 is not mapped in the user namespace: %s\n", strerror(errno));
}

// ---- mounts (virtiofsd sandbox.rs setup_mounts) ----

static void mkdirs(char *path, int last_is_file)
{
    for (char *s = path + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST) die("mkdir in the sandbox root");
        *s = '/';
    }
    if (last_is_file) {
        if (access(path, F_OK) == 0) return; // already there inside an earlier bind
        int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) die("mount point in the sandbox root");
        close(fd);
    } else if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        die("mkdir in the sandbox root");
    }
}

// Returns an O_PATH fd of the fresh /proc/self/fd (kept for re-opening inodes through their magic links).
static int mount_proc(void)
{
    // Nothing we mount from here on may propagate back to the host.
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0) die("make / a slave mount");
    // A proc of the new pid namespace; then only its self/fd directory is left visible, so no ancestor of it can be
    // reached through the fd we keep (as virtiofsd does).
    if (mount("proc", "/proc", "proc", MS_NODEV | MS_NOEXEC | MS_NOSUID | MS_RELATIME, NULL) != 0) die("mount proc");
    if (mount("/proc/self/fd", "/proc", NULL, MS_BIND, NULL) != 0) die("bind /proc/self/fd");
    int fd = open("/proc", O_PATH | O_DIRECTORY);
    if (fd < 0) die("open /proc/self/fd");
    return fd;
}

static void pivot_here(void)
{
    // pivot_root(".", "."): the old root ends up stacked on "/" and is detached at once.
    if (syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root");
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) != 0) die("make the old root a slave");
    if (umount2(".", MNT_DETACH) != 0) die("detach the old root");
    if (chdir("/") != 0) die("chdir /");
}

static void enter_shared_dir(const char *root)
{
    // A bind mount of the shared directory onto itself makes it a mount point, which pivot_root needs.
    if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind the shared directory");
    if (chdir(root) != 0) die("chdir into the shared directory");
    pivot_here();
}

// Image modes: the root is an empty tmpfs with only the blob and cache directories, the bootstrap and the API
// socket's directory bound in at their host paths, so paths in the command line still name them.
static void enter_tmpfs_root(const struct plan *p)
{
    int fds[MAX_ITEMS];
    struct stat st[MAX_ITEMS];
    for (int i = 0; i < p->nbinds; i++) {
        fds[i] = open(p->binds[i], O_PATH | O_CLOEXEC);
        if (fds[i] < 0 || fstat(fds[i], &st[i]) != 0) {
            dprintf(2, "vfsd: sandbox: %s: %s\n", p->binds[i], strerror(errno));
            _exit(1);
        }
    }
    // /tmp is only the place the new root is assembled; every source above is held by an fd already.
    const char *base = "/tmp";
    if (mount("vfsd-root", base, "tmpfs", MS_NODEV | MS_NOEXEC | MS_NOSUID, "mode=0755,size=1m") != 0) die("mount the tmpfs root");
    char target[4096], source[64];
    for (int i = 0; i < p->nbinds; i++) {
        if (snprintf(target, sizeof target, "%s%s", base, p->binds[i]) >= (int)sizeof target) fail("path too long");
        mkdirs(target, !S_ISDIR(st[i].st_mode));
        snprintf(source, sizeof source, "/proc/self/fd/%d", fds[i]);
        if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind into the sandbox root");
        // A character device bound in (/dev/urandom for a registry client: .NET's Guid and random numbers read it)
        // must stay openable: no MS_NODEV on its own mount.
        unsigned long nodev = S_ISCHR(st[i].st_mode) ? 0 : MS_NODEV;
        if (p->bind_ro[i] && mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | nodev, NULL) != 0)
            die("make a bind read-only");
        close(fds[i]);
    }
    if (p->cwd) {
        if (snprintf(target, sizeof target, "%s%s", base, p->cwd) >= (int)sizeof target) fail("path too long");
        mkdirs(target, 0);
    }
    if (chdir(base) != 0) die("chdir into the tmpfs root");
    pivot_here();
    // Nothing may be created beside the binds.
    if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NODEV | MS_NOEXEC | MS_NOSUID, NULL) != 0) die("make the root read-only");
    if (p->cwd && chdir(p->cwd) != 0) die("chdir");
}

// ---- capabilities (virtiofsd main.rs drop_capabilities) ----

static void drop_capabilities(uint64_t keep)
{
    // The bounding set first (needs CAP_SETPCAP, about to go): not even an execve could get the rest back.
    for (int cap = 0; cap <= 63; cap++) {
        if (keep & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_READ, cap) <= 0) continue; // past the kernel's last capability, or already gone
        if (prctl(PR_CAPBSET_DROP, cap) != 0) die("PR_CAPBSET_DROP");
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    data[0].effective = data[0].permitted = (uint32_t)keep;
    data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
    if (syscall(SYS_capset, &hdr, data) != 0) die("capset");
}

// ---- seccomp (virtiofsd seccomp.rs): an allow-list, everything else gets the chosen action ----

static const int allowed_syscalls[] = {
#include "build/seccomp_list.h"
};

static void install_seccomp(const char *action)
{
    uint32_t ret;
    if (!strcmp(action, "kill")) ret = SECCOMP_RET_KILL_PROCESS;
    else if (!strcmp(action, "log")) ret = SECCOMP_RET_LOG;
    else if (!strcmp(action, "trap")) ret = SECCOMP_RET_TRAP;
    else if (!strcmp(action, "none")) return;
    else fail("unknown seccomp action");

    enum { N = sizeof allowed_syscalls / sizeof allowed_syscalls[0] };
    struct sock_filter f[N + 8];
    int k = 0;
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
#if defined(__x86_64__)
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
#elif defined(__aarch64__)
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_AARCH64, 1, 0);
#else
#error "no seccomp list for this architecture (add native-shim/seccomp_<arch>.list)"
#endif
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS); // another ABI: never allowed
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (int i = 0; i < N; i++) {
        // Each match jumps over the remaining comparisons and the default to the final ALLOW.
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)allowed_syscalls[i], (uint8_t)(N - i), 0);
    }
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = { .len = (unsigned short)k, .filter = f };
    // no_new_privs: required to install a filter without CAP_SYS_ADMIN, and nothing exec'd later may gain privileges.
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
    // TSYNC: there is one thread now, but say so in the filter's contract.
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0) die("seccomp");
}

_Static_assert(sizeof allowed_syscalls / sizeof allowed_syscalls[0] < 250, "jump offsets are 8 bits: split the list");

__attribute__((constructor)) static void vfsd_sandbox(void)
{
    const char *env = getenv("VFSD_SANDBOX");
    // Only this constructor may say the sandbox is up: a value inherited from elsewhere is dropped.
    unsetenv("VFSD_SANDBOX_ACTIVE");
    if (!env) return;
    require_single_thread();
    char *text = strdup(env);
    if (!text) fail("out of memory");
    struct plan p;
    parse_plan(text, &p);
    for (int i = 0; i < p.npreloads; i++) {
        // Kept loaded for the process's life; a host without it fails later exactly as it would unsandboxed.
        if (!dlopen(p.preloads[i], RTLD_NOW | RTLD_GLOBAL)) dprintf(2, "vfsd: sandbox: cannot preload %s: %s\n", p.preloads[i], dlerror());
    }

    int procfd = -1;
    int rooted = 0;
    if (!strcmp(p.mode, "namespace")) {
        // The pid namespace first: it applies to the children, so the daemon forked next is its pid 1. The rest only
        // in the daemon: the waiting parent must keep the host's mount namespace (pivot_root would move its root too)
        // to remove the socket at its host path.
        // Unprivileged: the user namespace first, so the ones below are owned by it (and the daemon may mount).
        if (p.userns) enter_user_namespace(&p);
        if (unshare(CLONE_NEWPID) != 0) die("unshare(CLONE_NEWPID)");
        fork_daemon(&p); // only the daemon returns
        if (unshare(CLONE_NEWNS | CLONE_NEWIPC | (p.net ? CLONE_NEWNET : 0)) != 0) die("unshare");
        if (p.root) {
            procfd = mount_proc();
            enter_shared_dir(p.root);
        } else {
            // An image is served from fds and blob files; nothing re-opens through /proc, so none is mounted.
            if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0) die("make / a slave mount");
            enter_tmpfs_root(&p);
        }
        rooted = 1;
    } else if (!strcmp(p.mode, "chroot")) {
        if (!p.root) fail("chroot needs a root");
        fork_daemon(&p);
        procfd = open("/proc/self/fd", O_PATH | O_DIRECTORY);
        if (procfd < 0) die("open /proc/self/fd");
        if (chroot(p.root) != 0) die("chroot");
        if (chdir("/") != 0) die("chdir /");
        rooted = 1;
    } else if (strcmp(p.mode, "none") != 0) {
        fail("unknown sandbox mode");
    }
    if (procfd >= 0) {
        // The daemon re-opens inodes as /proc/self/fd/N; inside the new root that path does not exist, so the working
        // directory is the fd directory and the daemon uses the relative name "N" (PassthroughFileSystem.ProcPath).
        if (fchdir(procfd) != 0) die("fchdir to /proc/self/fd");
    }
    if (p.caps_given) drop_capabilities(p.caps);
    install_seccomp(p.seccomp);

    char active[256];
    snprintf(active, sizeof active, "mode=%s,procfd=%d,rooted=%d,listenfd=%d,net=%d,userns=%d,seccomp=%s,caps=%s%llx", p.mode,
             procfd, rooted, p.listenfd, p.net, p.userns, p.seccomp, p.caps_given ? "" : "-", (unsigned long long)p.caps);
    if (setenv("VFSD_SANDBOX_ACTIVE", active, 1) != 0 || unsetenv("VFSD_SANDBOX") != 0) fail("environment");
    free(text);
}
