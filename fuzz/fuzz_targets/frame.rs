//! Fuzz target `frame`: see `syncline_testkit::fuzz::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_testkit::fuzz::frame(data));
