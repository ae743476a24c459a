//! Fuzz target: claims template build / validate / metadata round trip (see backstop::fuzzing::token).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::token::template(data));
