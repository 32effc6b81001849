/*
 * unix-ask ADDRESS REQUEST: connects to the unix stream socket ADDRESS (`@name` for the
 * abstract namespace, else a path), sends REQUEST and a newline, and prints whatever comes
 * back until the other side closes. A stand-in for a hostile client in a container that has
 * no graceful-run to run: tests/container/run builds it with musl-gcc (static) into the test
 * rootfs only; it is not part of the image.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: unix-ask @NAME|PATH REQUEST\n");
        return 2;
    }
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    const char *name = argv[1];
    size_t length = strlen(name);
    if (length == 0 || length >= sizeof address.sun_path) {
        fprintf(stderr, "unix-ask: bad address\n");
        return 2;
    }
    socklen_t size;
    if (name[0] == '@') {
        /* Abstract: a NUL, then the name, without a terminating NUL. */
        memcpy(address.sun_path + 1, name + 1, length - 1);
        size = offsetof(struct sockaddr_un, sun_path) + length;
    } else {
        memcpy(address.sun_path, name, length);
        size = offsetof(struct sockaddr_un, sun_path) + length + 1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, size) != 0) {
        perror("unix-ask: connect");
        return 1;
    }
    dprintf(fd, "%s\n", argv[2]);
    char buffer[4096];
    ssize_t got;
    while ((got = read(fd, buffer, sizeof buffer)) > 0) {
        fwrite(buffer, 1, (size_t)got, stdout);
    }
    return 0;
}
