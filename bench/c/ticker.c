/*
 * ticker.c - sends a signal at a steady rhythm (figures 6 and 7).
 *
 *   ticker HUP 200 100 PID               SIGHUP to PID every 200 ms, 100 times
 *   ticker --children KILL 500 40 PID    SIGKILL to each live child of PID every 500 ms,
 *                                        40 times
 *
 * Ticks are INTERVAL_MS apart, on an absolute schedule so that the rhythm does not drift.
 * Standard signals do not queue: one sent while the previous one is still pending (not yet
 * delivered, e.g. while PID sits in fork() with its signals blocked) merges with it. So
 * without --children a tick first waits until PID has no such signal pending (its
 * /proc/PID/status SigPnd and ShdPnd masks); a late tick moves the schedule, it does not
 * bunch the following ones up.
 *
 * Each tick prints `TIME_NS TARGET_PID` on stdout (CLOCK_MONOTONIC, the clock loadgen.c
 * records with); with --children, a tick that finds no live child (a crashed server being
 * restarted, or not reaped yet) prints `TIME_NS -`. Exits early, quietly, when PID is gone.
 */
#include "common.h"

struct signame {
    const char *name;
    int sig;
};

static const struct signame signames[] = {
    { "HUP", SIGHUP }, { "KILL", SIGKILL }, { "TERM", SIGTERM }, { "USR1", SIGUSR1 },
};

static int parse_signal(const char *name)
{
    for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
        if (strcmp(name, signames[i].name) == 0)
            return signames[i].sig;
    die("unknown signal %s", name);
}

/* Whether pid has exited but is not reaped yet: signalling it would do nothing. */
static int is_zombie(int pid)
{
    char path[64], state = '?';
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    /* "pid (comm) S ...": the state follows the last ')' (comm may contain one) */
    char line[512];
    if (fgets(line, sizeof line, f)) {
        char *paren = strrchr(line, ')');
        if (paren && paren[1] == ' ')
            state = paren[2];
    }
    fclose(f);
    return state == 'Z' || state == 'X';
}

/* Whether sig is pending for pid (thread or process-wide); -1 when pid is gone. */
static int is_pending(pid_t pid, int sig)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int pending = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "SigPnd:", 7) == 0 || strncmp(line, "ShdPnd:", 7) == 0)
            pending |= (int)((strtoull(line + 7, NULL, 16) >> (sig - 1)) & 1);
    }
    fclose(f);
    return pending;
}

/*
 * Signals every live child of `parent` (from /proc/PID/task/PID/children); returns how many,
 * or -1 when parent is gone.
 */
static int signal_children(pid_t parent, int sig, uint64_t t)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", parent, parent);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0, pid;
    while (fscanf(f, "%d", &pid) == 1) {
        if (is_zombie(pid))
            continue;
        kill(pid, sig);
        printf("%llu %d\n", (unsigned long long)t, pid);
        n++;
    }
    fclose(f);
    return n;
}

static struct timespec to_timespec(uint64_t ns)
{
    return (struct timespec){
        .tv_sec = (time_t)(ns / 1000000000u),
        .tv_nsec = (long)(ns % 1000000000u),
    };
}

int main(int argc, char **argv)
{
    int children = argc > 1 && strcmp(argv[1], "--children") == 0;
    int a = 1 + children;
    if (argc != a + 4)
        die("usage: ticker [--children] SIGNAL INTERVAL_MS COUNT PID");
    int sig = parse_signal(argv[a]);
    long interval_ms = strtol(argv[a + 1], NULL, 10);
    long count = strtol(argv[a + 2], NULL, 10);
    pid_t pid = (pid_t)strtol(argv[a + 3], NULL, 10);
    if (interval_ms < 1 || count < 1 || pid < 1)
        die("INTERVAL_MS, COUNT and PID must be positive");

    uint64_t interval = (uint64_t)interval_ms * 1000000u;
    uint64_t next = now_ns() + interval;
    for (long k = 1; k <= count; k++) {
        struct timespec at = to_timespec(next);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR) {
        }
        if (children) {
            int n = signal_children(pid, sig, now_ns());
            if (n < 0)
                return 0;
            if (n == 0)
                printf("%llu -\n", (unsigned long long)now_ns());
        } else {
            int pending;
            while ((pending = is_pending(pid, sig)) == 1)
                sleep_ms(1);
            uint64_t t = now_ns();
            if (pending < 0 || kill(pid, sig) == -1)
                return 0;
            printf("%llu %d\n", (unsigned long long)t, pid);
            if (t > next)
                next = t; /* late: the rhythm restarts from here */
        }
        fflush(stdout);
        next += interval;
    }
    return 0;
}
