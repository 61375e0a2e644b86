{
  "targets": [
    {
      "target_name": "floor",
      "sources": ["floor.cc"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"]
    }
  ]
}
