//! Fuzz target `device`: see `syncline_testkit::fuzz::device`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_testkit::fuzz::device(data));
