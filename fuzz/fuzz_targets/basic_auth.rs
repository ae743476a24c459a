//! Fuzz target: HTTP Basic client authentication (RFC 6749 §2.3.1), checked against a conforming encoder (see backstop::fuzzing::protocol).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::protocol::basic_auth(data));
