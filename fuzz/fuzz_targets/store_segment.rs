//! Fuzz target: opening arbitrary bytes as a segment file and looking keys up in it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::store::segment_open(data));
