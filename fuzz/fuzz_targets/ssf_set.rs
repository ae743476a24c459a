//! Fuzz target: Shared Signals SET verification and event mapping (see backstop::fuzzing::ssf).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::ssf::ssf_set(data));
