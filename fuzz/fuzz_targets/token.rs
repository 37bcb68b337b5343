//! Fuzz target `token`: see `syncline_testkit::fuzz::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_testkit::fuzz::token(data));
