//! Fuzz target `config`: see `syncline_testkit::fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_testkit::fuzz::config(data));
