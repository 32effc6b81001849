/*
 * common.h - helpers shared by the benchmark programs in bench/c/.
 *
 * The measured child (child.c) and the drivers (siglat.c, stopwatch.c, handover.c) talk
 * through the child's stdout, which every wrapper under test passes through unchanged: the
 * child writes fixed-size binary records, each in one write(2) (so records from several
 * processes sharing the pipe never interleave), and the driver reads them.
 *
 * Every timestamp is CLOCK_MONOTONIC in nanoseconds, the same clock in every process.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What a record reports. */
enum record_kind {
    REC_START = 1, /* the child has started; pid is its pid */
    REC_USR1 = 2,  /* the child's SIGUSR1 handler ran at ns */
    REC_TERM = 3,  /* the child's SIGTERM handler ran at ns */
    REC_READY = 4, /* the child is about to send READY=1 (mode wait: starts waiting on fd 3) */
};

struct record {
    uint64_t kind;
    uint64_t pid;
    uint64_t ns;
};

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

__attribute__((noreturn, format(printf, 1, 2))) static inline void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", program_invocation_short_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Starts argv[0] with its stdout on a pipe; returns its pid, and the pipe's read end in *out. */
static inline pid_t spawn_piped(char *const argv[], int *out)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == -1)
        die("pipe2: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == -1)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    *out = fds[0];
    return pid;
}

/* Reads the next record; dies if the pipe closes first. */
static inline void read_record(int fd, struct record *rec)
{
    size_t got = 0;
    while (got < sizeof *rec) {
        ssize_t n = read(fd, (char *)rec + got, sizeof *rec - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            die("the measured command closed its output (%s)", n == 0 ? "EOF" : strerror(errno));
        got += (size_t)n;
    }
}

/* Reads records until one of `kind` arrives. */
static inline void read_record_of(int fd, uint64_t kind, struct record *rec)
{
    do
        read_record(fd, rec);
    while (rec->kind != kind);
}

/* Stops the wrapper that a driver started and reaps it. */
static inline void stop_and_reap(pid_t pid)
{
    kill(pid, SIGTERM);
    while (waitpid(pid, NULL, 0) == -1 && errno == EINTR) {
    }
}

static inline int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/*
 * Prints the summary of n samples (nanoseconds; sorted in place) as `key value` lines in
 * microseconds: median, p90 and p99 (nearest rank), min, max, mean.
 */
static inline void print_summary_us(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    size_t p99 = (n * 99 + 99) / 100; /* nearest rank: ceil(0.99 n), 1-based */
    size_t p90 = (n * 90 + 99) / 100;
    printf("samples %zu\n", n);
    printf("median_us %.1f\n", (n % 2 ? (double)v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0) / 1e3);
    printf("p90_us %.1f\n", (double)v[p90 - 1] / 1e3);
    printf("p99_us %.1f\n", (double)v[p99 - 1] / 1e3);
    printf("min_us %.1f\n", (double)v[0] / 1e3);
    printf("max_us %.1f\n", (double)v[n - 1] / 1e3);
    printf("mean_us %.1f\n", sum / (double)n / 1e3);
}

#endif
