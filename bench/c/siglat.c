/*
 * siglat.c - signal forwarding latency (figure 4).
 *
 *   siglat COUNT -- WRAPPER... child usr1     signal the wrapper; it forwards to the child
 *   siglat --direct COUNT -- child usr1       signal the child itself (the baseline)
 *
 * Starts the command with its stdout on a pipe, learns the child's pid from its START record,
 * then COUNT times: t0 = now, kill(target, SIGUSR1), wait for the child's USR1 record (the
 * timestamp its handler took), latency = record - t0. Signals are 1 ms apart, so each one
 * finds the wrapper idle, as a real signal would. Prints the summary (common.h) in us.
 */
#include "common.h"

int main(int argc, char **argv)
{
    int direct = argc > 1 && strcmp(argv[1], "--direct") == 0;
    int first = 1 + direct;
    if (argc < first + 3 || strcmp(argv[first + 1], "--") != 0)
        die("usage: siglat [--direct] COUNT -- COMMAND...");
    long count = strtol(argv[first], NULL, 10);
    if (count < 1)
        die("COUNT must be positive");

    int out;
    pid_t wrapper = spawn_piped(argv + first + 2, &out);
    struct record rec;
    read_record_of(out, REC_START, &rec);
    pid_t target = direct ? (pid_t)rec.pid : wrapper;
    sleep_ms(100); /* let the wrapper finish starting up */

    int64_t *latency = calloc((size_t)count, sizeof *latency);
    if (!latency)
        die("out of memory");
    for (long i = 0; i < count; i++) {
        uint64_t t0 = now_ns();
        if (kill(target, SIGUSR1) == -1)
            die("kill: %s", strerror(errno));
        read_record_of(out, REC_USR1, &rec);
        latency[i] = (int64_t)(rec.ns - t0);
        sleep_ms(1);
    }
    stop_and_reap(wrapper);
    print_summary_us(latency, (size_t)count);
    return 0;
}
