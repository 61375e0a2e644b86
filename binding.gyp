{
  "targets": [
    {
      "target_name": "socktune",
      "sources": ["native/binding.cc", "native/core_posix.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden", "-Wall", "-Wextra", "-O2"],
      "conditions": [
        ["OS=='linux'", {"sources": ["native/core_linux.cc", "native/diag_linux.cc", "native/watch_linux.cc"]}],
        ["OS=='mac'", {
          "sources": ["native/core_darwin.cc", "native/views_none.cc", "native/diag_none.cc", "native/watch_none.cc"],
          "xcode_settings": {"CLANG_CXX_LANGUAGE_STANDARD": "c++17", "MACOSX_DEPLOYMENT_TARGET": "11.0"}
        }],
        ["OS=='win'", {"sources": ["native/core_win.cc", "native/views_none.cc", "native/diag_none.cc", "native/watch_none.cc"], "libraries": ["ws2_32.lib"]}]
      ]
    }
  ]
}
