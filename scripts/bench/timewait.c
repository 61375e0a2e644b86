// Makes TIME_WAIT sockets fast, for the diagnostics benchmark (scripts/bench/timewait.mjs builds and
// runs it inside a network namespace of the bench's own; it only ever targets loopback there).
//
// On loopback a connect() completes inside the syscall (the SYN, SYN-ACK and ACK are processed in
// the same softirq), so one thread can do a whole connection with five blocking syscalls and no
// event loop: socket, connect, accept, close (client first: it will hold the TIME_WAIT), close
// (server: its FIN moves the client from FIN_WAIT2 to TIME_WAIT). Threads split the count and each
// has listeners of its own on every address × port, so the destinations are spread evenly.
//
// usage: timewait COUNT THREADS PORTS ADDR... (addresses are IPv4 text, e.g. 127.0.0.1)
// prints: closed failed first_errno ms
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct job {
  long count;
  int ports;
  int naddr;
  char** addr;
  long closed;
  long failed;
  int first_errno;
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void* run(void* arg) {
  struct job* j = (struct job*)arg;
  int n = j->naddr * j->ports;
  int* lfd = calloc(n, sizeof(int));
  struct sockaddr_in* dst = calloc(n, sizeof(struct sockaddr_in));
  for (int i = 0; i < n; i++) {
    dst[i].sin_family = AF_INET;
    inet_pton(AF_INET, j->addr[i % j->naddr], &dst[i].sin_addr);
    lfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof dst[i];
    if (lfd[i] < 0 || bind(lfd[i], (struct sockaddr*)&dst[i], len) != 0 || listen(lfd[i], 64) != 0 ||
        getsockname(lfd[i], (struct sockaddr*)&dst[i], &len) != 0) {
      j->first_errno = errno;
      j->failed = j->count;
      return NULL;
    }
  }
  for (long k = 0; k < j->count; k++) {
    int i = (int)(k % n);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int s = -1;
    if (c < 0 || connect(c, (struct sockaddr*)&dst[i], sizeof dst[i]) != 0 || (s = accept(lfd[i], NULL, NULL)) < 0) {
      if (!j->first_errno) j->first_errno = errno;
      j->failed++;
    } else {
      j->closed++;
    }
    if (c >= 0) close(c);
    if (s >= 0) close(s);
  }
  for (int i = 0; i < n; i++) close(lfd[i]);
  free(lfd);
  free(dst);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: timewait COUNT THREADS PORTS ADDR...\n");
    return 2;
  }
  long count = atol(argv[1]);
  int threads = atoi(argv[2]);
  int ports = atoi(argv[3]);
  if (count < 1 || threads < 1 || threads > 64 || ports < 1) {
    fprintf(stderr, "timewait: bad arguments\n");
    return 2;
  }
  struct job jobs[64];
  pthread_t tid[64];
  double t0 = now_ms();
  for (int t = 0; t < threads; t++) {
    jobs[t] = (struct job){count / threads + (t < count % threads), ports, argc - 4, argv + 4, 0, 0, 0};
    pthread_create(&tid[t], NULL, run, &jobs[t]);
  }
  long closed = 0, failed = 0;
  int first = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tid[t], NULL);
    closed += jobs[t].closed;
    failed += jobs[t].failed;
    if (!first) first = jobs[t].first_errno;
  }
  printf("%ld %ld %d %.1f\n", closed, failed, first, now_ms() - t0);
  return 0;
}
