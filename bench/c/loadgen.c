/*
 * loadgen.c - an HTTP load generator that records every request (the latency plot of
 * figure 6; wrk only reports aggregates).
 *
 *   loadgen PORT CONNECTIONS SECONDS OUT.csv
 *
 * One thread per connection, each a keep-alive HTTP/1.1 client sending `GET /` to
 * 127.0.0.1:PORT as fast as answers come. A connection the server closes (Connection: close,
 * as a draining server answers) is reopened for the next request, and the time to open it
 * counts towards that request's latency. Every request becomes one CSV row:
 *
 *   start_ns,latency_us,outcome
 *
 * start_ns is CLOCK_MONOTONIC (ticker.c's clock); outcome is ok, or the failure class as wrk
 * names them: connect (refused or failed), read (reset or closed before the whole response),
 * write, timeout (nothing for 2 s), status (not 2xx). Totals per outcome go to stdout.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>

enum outcome { OK, E_CONNECT, E_READ, E_WRITE, E_TIMEOUT, E_STATUS, OUTCOMES };
static const char *const outcome_names[OUTCOMES] = {
    "ok", "connect", "read", "write", "timeout", "status",
};

#define IO_TIMEOUT_S 2

struct sample {
    uint64_t start_ns;
    uint32_t latency_us;
    uint32_t outcome;
};

struct client {
    pthread_t thread;
    struct sample *samples;
    size_t len, cap;
};

static struct sockaddr_in server;
static uint64_t deadline_ns;

static void record(struct client *c, uint64_t start, enum outcome outcome)
{
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 65536;
        c->samples = realloc(c->samples, c->cap * sizeof *c->samples);
        if (!c->samples)
            die("out of memory");
    }
    c->samples[c->len++] = (struct sample){ start, (uint32_t)((now_ns() - start) / 1000), outcome };
}

static int timed_out(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINPROGRESS;
}

/* Opens a connection; returns the fd, or -1 with the failure's outcome in *failure. */
static int open_connection(enum outcome *failure)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        die("socket: %s", strerror(errno));
    struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&server, sizeof server) == -1) {
        *failure = timed_out(errno) ? E_TIMEOUT : E_CONNECT;
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Sends one request and reads the whole response. Returns its outcome; *keep is cleared when
 * the connection cannot be used again.
 */
static enum outcome exchange(int fd, int *keep)
{
    static const char request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    *keep = 0;
    if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1))
        return timed_out(errno) ? E_TIMEOUT : E_WRITE;

    char buf[8192];
    size_t got = 0, head = 0, body = 0;
    while (!head || got < head + body) {
        if (got == sizeof buf - 1)
            return E_READ; /* a response this big is not what the example server sends */
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == 0)
            return E_READ;
        if (n == -1)
            return timed_out(errno) ? E_TIMEOUT : E_READ;
        got += (size_t)n;
        buf[got] = '\0';
        char *end;
        if (!head && (end = strstr(buf, "\r\n\r\n"))) {
            head = (size_t)(end - buf) + 4;
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
        }
    }
    if (strncmp(buf, "HTTP/1.", 7) != 0 || head < 16)
        return E_READ; /* not an HTTP/1.x response */
    const char *close_hdr = strcasestr(buf, "\r\nconnection: close");
    *keep = !(close_hdr && close_hdr < buf + head);
    int status = (int)strtol(buf + 9, NULL, 10); /* after "HTTP/1.1 " */
    return status >= 200 && status < 300 ? OK : E_STATUS;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    int fd = -1;
    while (now_ns() < deadline_ns) {
        uint64_t start = now_ns();
        if (fd == -1) {
            enum outcome failure;
            fd = open_connection(&failure);
            if (fd == -1) {
                record(c, start, failure);
                sleep_ms(1); /* a refused connect returns at once: do not spin */
                continue;
            }
        }
        int keep;
        enum outcome outcome = exchange(fd, &keep);
        record(c, start, outcome);
        if (!keep) {
            close(fd);
            fd = -1;
        }
    }
    if (fd != -1)
        close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5)
        die("usage: loadgen PORT CONNECTIONS SECONDS OUT.csv");
    int port = atoi(argv[1]);
    int connections = atoi(argv[2]);
    double seconds = strtod(argv[3], NULL);
    if (port < 1 || port > 65535 || connections < 1 || seconds <= 0)
        die("bad PORT, CONNECTIONS or SECONDS");
    FILE *out = fopen(argv[4], "w");
    if (!out)
        die("%s: %s", argv[4], strerror(errno));

    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)port);
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    deadline_ns = now_ns() + (uint64_t)(seconds * 1e9);

    struct client *clients = calloc((size_t)connections, sizeof *clients);
    if (!clients)
        die("out of memory");
    for (int i = 0; i < connections; i++)
        if (pthread_create(&clients[i].thread, NULL, client_main, &clients[i]) != 0)
            die("pthread_create failed");

    size_t totals[OUTCOMES] = { 0 };
    fprintf(out, "start_ns,latency_us,outcome\n");
    for (int i = 0; i < connections; i++) {
        pthread_join(clients[i].thread, NULL);
        for (size_t j = 0; j < clients[i].len; j++) {
            const struct sample *s = &clients[i].samples[j];
            fprintf(out, "%llu,%u,%s\n", (unsigned long long)s->start_ns, s->latency_us,
                    outcome_names[s->outcome]);
            totals[s->outcome]++;
        }
    }
    if (fclose(out) != 0)
        die("%s: %s", argv[4], strerror(errno));
    for (int o = 0; o < OUTCOMES; o++)
        printf("%s %zu\n", outcome_names[o], totals[o]);
    return 0;
}
