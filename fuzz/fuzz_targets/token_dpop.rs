//! Fuzz target: DPoP proof verification (see backstop::fuzzing::token).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::token::dpop_proof(data));
