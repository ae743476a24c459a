//! Fuzz target: WAL record decoding (and re-encoding round trip) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::store::wal_records(data));
