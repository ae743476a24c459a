//! Fuzz target: deriving a capture from a primary's token response (see backstop::fuzzing::capture).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::capture::capture_derive(data));
