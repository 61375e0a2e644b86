// The peer of scripts/bench/watch.mjs, in C so that its own pace is not what is measured.
// Usage: finpeer N HOST PORT1 PORT2 SPACED
// Opens N connections to HOST (alternately PORT1 and PORT2), prints "ready", and waits for a line
// on stdin. Then it sends its FIN (shutdown(SHUT_WR)) on SPACED of them spread over the N, one a
// millisecond, and then on all the others at once, taking CLOCK_MONOTONIC (uv_hrtime's clock)
// just before each shutdown; prints "LOCALPORT REMOTEPORT PHASE NANOSECONDS" per connection and
// "done", and keeps every connection open until stdin closes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 6) return 2;
  int n = atoi(argv[1]);
  int ports[2] = {atoi(argv[3]), atoi(argv[4])};
  int spaced = atoi(argv[5]);
  int *fds = calloc(n, sizeof *fds);
  int *lports = calloc(n, sizeof *lports);
  uint64_t *at = calloc(n, sizeof *at);
  char *phase = calloc(n, 1);
  for (int i = 0; i < n; i++) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(ports[i % 2]);
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) != 0) {
      fprintf(stderr, "connection %d: ", i);
      perror("connect");
      return 1;
    }
    socklen_t len = sizeof a;
    getsockname(fds[i], (struct sockaddr *)&a, &len);
    lports[i] = ntohs(a.sin_port);
  }
  printf("ready\n");
  fflush(stdout);
  char line[64];
  if (fgets(line, sizeof line, stdin) == NULL) return 0;
  int step = spaced > 0 ? n / spaced : n + 1;
  struct timespec ms = {0, 1000000};
  for (int k = 0; k < spaced; k++) {
    int i = k * step;
    phase[i] = 's';
    at[i] = now_ns();
    shutdown(fds[i], SHUT_WR);
    nanosleep(&ms, NULL);
  }
  for (int i = 0; i < n; i++) {
    if (phase[i] == 's') continue;
    phase[i] = 'b';
    at[i] = now_ns();
    shutdown(fds[i], SHUT_WR);
  }
  for (int i = 0; i < n; i++) printf("%d %d %c %llu\n", lports[i], ports[i % 2], phase[i], (unsigned long long)at[i]);
  printf("done\n");
  fflush(stdout);
  while (fgets(line, sizeof line, stdin) != NULL) {
  }
  return 0;
}
