//! Fuzz target: the configuration file (see backstop::fuzzing::config_toml).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::config_toml(data));
