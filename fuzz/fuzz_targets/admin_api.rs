//! Fuzz target: the admin API's request bodies, query string and headers (see backstop::fuzzing::admin).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::admin::admin_api(data));
