//! Fuzz target `payload`: see `syncline_testkit::fuzz::payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_testkit::fuzz::payload(data));
