/*
 * handover.c - handover latency of a zero-downtime restart (figure 8).
 *
 *   handover COUNT -- WRAPPER... child ready
 *
 * Starts the wrapper with the child's stdout on a pipe and waits for the first generation's
 * READY record. Then COUNT times: SIGHUP to the wrapper, wait until a new pid has reported
 * READY (just before it sent READY=1) and the previous pid has reported its SIGTERM; the
 * handover latency is TERM(old) - READY(new). The next SIGHUP is sent only when the handover
 * is complete, so restarts never overlap. Prints the summary (common.h) in us; a negative
 * value means the old generation was stopped before the new one was ready.
 *
 * With `child wait BOOT_MS` (figure 9) READY means "starts waiting on its socket", so the
 * latency is how long graceful-run takes to notice. What each handover costs the wrapper is
 * printed too, from the SIGHUP to the end of the handover: its CPU time (cpu_us_median, the
 * sum over its threads of /proc/PID/task/TID/schedstat's first field, in ns, unlike the 10 ms
 * ticks of /proc/PID/stat) and its context switches (switches_median: wakeups, mostly).
 */
#include "common.h"

#include <dirent.h>

/* CPU time (ns) and context switches, summed over every thread of pid. */
static void usage_of(pid_t pid, uint64_t *cpu_ns, uint64_t *switches)
{
    char path[320], line[256]; /* room for any d_name */
    *cpu_ns = *switches = 0;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *dir = opendir(path);
    if (!dir)
        die("opendir %s: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        FILE *f = fopen(path, "r");
        unsigned long long ns = 0;
        if (f) {
            if (fscanf(f, "%llu", &ns) == 1)
                *cpu_ns += ns;
            fclose(f);
        }
        snprintf(path, sizeof path, "/proc/%d/task/%s/status", pid, e->d_name);
        f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "ctxt_switches:"))
                *switches += strtoull(strchr(line, ':') + 1, NULL, 10);
        if (f)
            fclose(f);
    }
    closedir(dir);
}

int main(int argc, char **argv)
{
    if (argc < 4 || strcmp(argv[2], "--") != 0)
        die("usage: handover COUNT -- COMMAND...");
    long count = strtol(argv[1], NULL, 10);
    if (count < 1)
        die("COUNT must be positive");

    int out;
    pid_t wrapper = spawn_piped(argv + 3, &out);
    struct record rec;
    read_record_of(out, REC_READY, &rec);
    uint64_t serving = rec.pid;
    sleep_ms(100); /* let the first generation settle */

    int64_t *latency = calloc((size_t)count, sizeof *latency);
    int64_t *cpu = calloc((size_t)count, sizeof *cpu);
    int64_t *switches = calloc((size_t)count, sizeof *switches);
    if (!latency || !cpu || !switches)
        die("out of memory");
    for (long i = 0; i < count; i++) {
        uint64_t cpu0, sw0, cpu1, sw1;
        usage_of(wrapper, &cpu0, &sw0);
        if (kill(wrapper, SIGHUP) == -1)
            die("kill: %s", strerror(errno));
        uint64_t ready_pid = 0, ready_ns = 0, term_ns = 0;
        while (!ready_pid || !term_ns) {
            read_record(out, &rec);
            if (rec.kind == REC_READY && rec.pid != serving) {
                ready_pid = rec.pid;
                ready_ns = rec.ns;
            } else if (rec.kind == REC_TERM && rec.pid == serving) {
                term_ns = rec.ns;
            }
        }
        usage_of(wrapper, &cpu1, &sw1);
        latency[i] = (int64_t)term_ns - (int64_t)ready_ns;
        cpu[i] = (int64_t)(cpu1 - cpu0);
        switches[i] = (int64_t)(sw1 - sw0);
        serving = ready_pid;
    }
    stop_and_reap(wrapper);
    print_summary_us(latency, (size_t)count);
    qsort(cpu, (size_t)count, sizeof *cpu, cmp_i64);
    qsort(switches, (size_t)count, sizeof *switches, cmp_i64);
    printf("cpu_us_median %.1f\n", (double)cpu[count / 2] / 1e3);
    printf("cpu_us_max %.1f\n", (double)cpu[count - 1] / 1e3);
    printf("switches_median %lld\n", (long long)switches[count / 2]);
    return 0;
}
