//! Fuzz target: the primary's discovery document and JWKS, as the metadata refresher takes them (see backstop::fuzzing::metadata).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::metadata::primary_metadata(data));
