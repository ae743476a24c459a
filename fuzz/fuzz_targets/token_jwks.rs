//! Fuzz target: JWK and JWKS parsing, and merge round trip (see backstop::fuzzing::token).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::token::jwks(data));
