//! Fuzz target `hub`: see `syncline_testkit::fuzz::hub`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_testkit::fuzz::hub(data));
