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
 */
#include "common.h"

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
    if (!latency)
        die("out of memory");
    for (long i = 0; i < count; i++) {
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
        latency[i] = (int64_t)term_ns - (int64_t)ready_ns;
        serving = ready_pid;
    }
    stop_and_reap(wrapper);
    print_summary_us(latency, (size_t)count);
    return 0;
}
