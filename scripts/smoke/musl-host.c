/*
 * A stand-in for a musl Node: loads an addon with musl's own dynamic loader, every symbol bound
 * at once (RTLD_NOW), and calls the one entry point that needs no Node-API call. The Node-API
 * functions the addon imports come from stubs the pack smoke test generates from
 * node-api-headers' def/node_api.def (compiled in with -DSTUBS="file"), exported with -rdynamic.
 * Prints "ok ... = <version>" or "FAIL ...".
 */
#include <dlfcn.h>
#include <stdio.h>
#include STUBS

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    printf("FAIL dlopen: %s\n", dlerror());
    return 1;
  }
  void* reg = dlsym(h, "napi_register_module_v1");
  int (*version)(void) = (int (*)(void))dlsym(h, "node_api_module_get_api_version_v1");
  if (!reg || !version) {
    printf("FAIL dlsym: an entry point is missing\n");
    return 1;
  }
  printf("ok node_api_module_get_api_version_v1() = %d\n", version());
  return 0;
}
