/*
 * fwd-epoll.c - the floor of graceful-run's signal path, for figure 4 by hand.
 *
 *   fwd-epoll COMMAND...          run COMMAND, forward USR1 to it, exit when it exits
 *   FWD_PGID=1 fwd-epoll ...      the same, with a getpgid(sender) before each kill
 *
 * graceful-run's way without graceful-run: every signal blocked, read from a signalfd that
 * an (edge-triggered) epoll waits on, forwarded with kill(2); no runtime, no decisions. Run it
 * as a wrapper under siglat beside tini and graceful-run, e.g.
 *
 *   taskset -c 0 siglat 1000 -- fwd-epoll child usr1
 *
 * to tell what epoll and the signalfd's read cost against tini's sigtimedwait from what
 * graceful-run adds on top. Not run by bench/run.
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/signalfd.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage: fwd-epoll COMMAND...");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL) == -1)
        die("sigprocmask: %s", strerror(errno));
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd == -1)
        die("signalfd: %s", strerror(errno));
    pid_t child = fork();
    if (child == -1)
        die("fork: %s", strerror(errno));
    if (child == 0) {
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = fd};
    if (ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
        die("epoll: %s", strerror(errno));
    int pgid = getenv("FWD_PGID") != NULL;
    struct epoll_event ready[8];
    struct signalfd_siginfo info[4];
    for (;;) {
        if (epoll_wait(ep, ready, 8, -1) <= 0)
            continue;
        /* Until a short read: the queue is empty and the edge re-arms. */
        for (;;) {
            ssize_t n = read(fd, info, sizeof info);
            if (n <= 0)
                break;
            for (size_t i = 0; i < (size_t)n / sizeof info[0]; i++) {
                int signal = (int)info[i].ssi_signo;
                if (signal == SIGCHLD) {
                    int status;
                    if (waitpid(child, &status, WNOHANG) == child)
                        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
                    continue;
                }
                if (pgid)
                    getpgid((pid_t)info[i].ssi_pid);
                kill(child, signal);
            }
            if ((size_t)n < sizeof info)
                break;
        }
    }
}
