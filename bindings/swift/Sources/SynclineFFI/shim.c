// A C target needs one source file. The FFI itself is the generated header (copied into
// include/ by `cargo xtask bindings`) and libsyncline_ffi, which Package.swift links; including
// the header here also checks that it compiles as C.
#include "syncline_ffiFFI.h"
