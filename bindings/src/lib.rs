//! syncline-ffi
