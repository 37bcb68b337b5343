//! Fuzz target `session`: see `syncline_testkit::fuzz::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_testkit::fuzz::session(data));
