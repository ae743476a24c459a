//! Fuzz target: the token endpoint's form body and Authorization header (see backstop::fuzzing::token_request).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::token_request(data));
