/*
 * The few glibc symbols Debian's libstdc++.so.6 and libgcc_s.so.1 import that musl lacks, so Bun's
 * musl build (which links libstdc++ dynamically; Debian packages no musl libstdc++) runs under
 * Debian's musl: the idea of Alpine's gcompat, reduced to what those two libraries need. Built with
 * musl-gcc as ld-linux-x86-64.so.2 (libstdc++ names that file as a dependency) by
 * scripts/runtimes.mjs. A test host, not something socktune ships.
 */
#define _GNU_SOURCE
#include <locale.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>

char __libc_single_threaded = 0;

uint32_t arc4random(void) {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != sizeof v) {
  }
  return v;
}

size_t __strftime_l(char* s, size_t n, const char* f, const struct tm* t, locale_t l) { return strftime_l(s, n, f, t, l); }

/* thread_local destructors of libstdc++ are not run at thread exit (a leak, in a test host). */
int __cxa_thread_atexit_impl(void (*dtor)(void*), void* obj, void* dso) {
  (void)dtor;
  (void)obj;
  (void)dso;
  return 0;
}

/* Unwinding falls back to dl_iterate_phdr, which musl has. */
int _dl_find_object(void* pc, void* result) {
  (void)pc;
  (void)result;
  return -1;
}

/* libgcc_s's own copies are hidden versioned symbols, which musl's loader does not bind: CPU
 * feature dispatch then takes the baseline path. */
struct {
  unsigned vendor, type, subtype, features[1];
} __cpu_model;
int __cpu_indicator_init(void) { return 0; }
