//! Fuzz target: trusted-proxy X-Forwarded-For and User-Agent, as Conditional Access reads them (see backstop::fuzzing::request).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::request::request_facts(data));
