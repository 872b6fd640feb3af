/*
 * musl_resolve NAME: the addresses getaddrinfo(3) gives for NAME, one per line, as a program
 * linked statically against musl (Alpine images, static binaries) sees them. Exit status 0 with
 * at least one address; 2 with gai_strerror's message on stderr otherwise.
 *
 * Built by tests/tests/dns.rs with `musl-gcc -static`.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: musl_resolve NAME\n");
        return 64;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM; /* one entry per address, not one per socket type */
    struct addrinfo *result = NULL;
    int rc = getaddrinfo(argv[1], NULL, &hints, &result);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], gai_strerror(rc));
        return 2;
    }
    for (struct addrinfo *ai = result; ai != NULL; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN];
        const void *addr = ai->ai_family == AF_INET
            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if (inet_ntop(ai->ai_family, addr, text, sizeof text) != NULL) {
            printf("%s\n", text);
        }
    }
    freeaddrinfo(result);
    return 0;
}
