//! Fuzz target: the Conditional Access policy loader (see backstop::fuzzing::policy).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::policy::policy_json(data));
