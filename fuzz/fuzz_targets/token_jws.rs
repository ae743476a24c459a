//! Fuzz target: JWS compact parsing and JWT verification (see backstop::fuzzing::token).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::token::jws_compact(data));
