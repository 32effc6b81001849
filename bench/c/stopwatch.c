/*
 * stopwatch.c - stop-timeout precision (figure 5).
 *
 *   stopwatch TIMEOUT_MS --send-term -- graceful-run --stop-timeout 1s -- child term
 *   stopwatch TIMEOUT_MS -- timeout -s TERM -k 1s 0.1 child term
 *
 * The child (child.c, mode term) reports each SIGTERM and keeps running, so only the
 * wrapper's SIGKILL ends it. The wrapper's deadline starts when it sends the stop signal, so
 * the error is measured from the moment the child's TERM handler ran:
 *
 *   error = t(child dead) - t(child got TERM) - TIMEOUT_MS
 *
 * The child's death is observed through a pidfd (pidfd_open works for processes that are
 * not our children) in poll(2). With --send-term the driver itself sends SIGTERM to the
 * wrapper after 100 ms and also prints the error measured from its own kill(2). Without it the
 * wrapper is expected to send TERM on its own (GNU timeout after its duration). Prints
 * `error_ms X` (and `driver_error_ms X`).
 */
#include "common.h"

#include <poll.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    if (argc < 4)
        die("usage: stopwatch TIMEOUT_MS [--send-term] -- COMMAND...");
    double timeout_ms = strtod(argv[1], NULL);
    int send_term = strcmp(argv[2], "--send-term") == 0;
    int cmd = 2 + send_term;
    if (strcmp(argv[cmd], "--") != 0 || cmd + 1 >= argc)
        die("usage: stopwatch TIMEOUT_MS [--send-term] -- COMMAND...");

    int out;
    pid_t wrapper = spawn_piped(argv + cmd + 1, &out);
    struct record rec;
    read_record_of(out, REC_START, &rec);
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)rec.pid, 0);
    if (pidfd == -1)
        die("pidfd_open: %s", strerror(errno));

    uint64_t t_sent = 0;
    if (send_term) {
        sleep_ms(100); /* let the wrapper finish starting up */
        t_sent = now_ns();
        if (kill(wrapper, SIGTERM) == -1)
            die("kill: %s", strerror(errno));
    }
    read_record_of(out, REC_TERM, &rec);
    uint64_t t_term = rec.ns;

    struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
    int timeout_poll = (int)timeout_ms + 10000;
    int ready;
    while ((ready = poll(&pfd, 1, timeout_poll)) == -1 && errno == EINTR) {
    }
    if (ready != 1)
        die("the child was not killed within %d ms", timeout_poll);
    uint64_t t_dead = now_ns();

    printf("error_ms %.3f\n", (double)(t_dead - t_term) / 1e6 - timeout_ms);
    if (send_term)
        printf("driver_error_ms %.3f\n", (double)(t_dead - t_sent) / 1e6 - timeout_ms);
    while (waitpid(wrapper, NULL, 0) == -1 && errno == EINTR) {
    }
    return 0;
}
