/*
 * child.c - the process that the benchmarks run under each wrapper.
 *
 *   child usr1    report START, then report (REC_USR1) every SIGUSR1 it receives
 *   child term    report START, then report (REC_TERM) every SIGTERM and keep running:
 *                 a server that ignores its stop signal, which only SIGKILL ends
 *   child ready   report START, report READY and send READY=1 to $NOTIFY_SOCKET (if set);
 *                 on SIGTERM report TERM and exit
 *   child wait BOOT_MS [notify]
 *                 a server that boots slowly and never says it is ready: report START, sleep
 *                 BOOT_MS, add the listener on fd 3 to an epoll set, report READY (here: "starts
 *                 waiting for connections", taken after epoll_ctl, which is what --ready
 *                 accepting looks for in /proc, and just before epoll_wait), send READY=1 too
 *                 only with `notify`, then wait in epoll_wait; on SIGTERM report TERM and exit.
 *                 Nothing connects to it (figure 9 measures readiness, not serving), so it
 *                 never accepts.
 *
 * Reports are struct record (common.h) written to stdout, from the signal handlers
 * themselves with write(2), so a timestamp is taken as soon as the handler runs.
 */
#include "common.h"

#include <stddef.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>

static void report(uint64_t kind)
{
    struct record rec = { .kind = kind, .pid = (uint64_t)getpid(), .ns = now_ns() };
    if (write(STDOUT_FILENO, &rec, sizeof rec) != (ssize_t)sizeof rec)
        _exit(3); /* the driver is gone */
}

static void on_usr1(int sig)
{
    (void)sig;
    report(REC_USR1);
}

static void on_term_keep_running(int sig)
{
    (void)sig;
    report(REC_TERM);
}

static void on_term_exit(int sig)
{
    (void)sig;
    report(REC_TERM);
    _exit(0);
}

static void handle(int sig, void (*handler)(int))
{
    struct sigaction sa = { .sa_handler = handler, .sa_flags = SA_RESTART };
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) == -1)
        die("sigaction: %s", strerror(errno));
}

/* sd_notify(3) without libsystemd: one datagram to a path or an @abstract name. */
static void notify_ready(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path)
        return;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@'))
        die("unusable NOTIFY_SOCKET %s", path);
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        die("socket: %s", strerror(errno));
    static const char msg[] = "READY=1";
    socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, msg, sizeof msg - 1, 0, (struct sockaddr *)&addr, addr_len) == -1)
        die("sendto %s: %s", path, strerror(errno));
    close(fd);
}

/* Boots for boot_ms, then waits on the listener on fd 3 (mode `wait`); never returns. */
static void serve_after(unsigned boot_ms, int notify)
{
    int type;
    socklen_t len = sizeof type;
    if (getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len) == -1)
        die("fd 3 is not a socket (run under a socket-activation wrapper): %s", strerror(errno));
    sleep_ms(boot_ms);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep == -1)
        die("epoll_create1: %s", strerror(errno));
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = 3 };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 3, &ev) == -1)
        die("epoll_ctl: %s", strerror(errno));
    report(REC_READY);
    if (notify)
        notify_ready();
    for (;;)
        epoll_wait(ep, &ev, 1, -1); /* EINTR aside, only a connection wakes it: none comes */
}

int main(int argc, char **argv)
{
    const char *mode = argc >= 2 ? argv[1] : "";
    if (strcmp(mode, "wait") == 0 && (argc == 3 || (argc == 4 && !strcmp(argv[3], "notify")))) {
        handle(SIGTERM, on_term_exit);
        report(REC_START);
        serve_after((unsigned)strtoul(argv[2], NULL, 10), argc == 4);
    } else if (argc != 2) {
        die("usage: child usr1|term|ready|wait BOOT_MS [notify]");
    } else if (strcmp(mode, "usr1") == 0) {
        handle(SIGUSR1, on_usr1);
        report(REC_START);
    } else if (strcmp(mode, "term") == 0) {
        handle(SIGTERM, on_term_keep_running);
        report(REC_START);
    } else if (strcmp(mode, "ready") == 0) {
        handle(SIGTERM, on_term_exit);
        report(REC_START);
        report(REC_READY);
        notify_ready();
    } else {
        die("usage: child usr1|term|ready|wait BOOT_MS [notify]");
    }
    for (;;)
        pause();
}
