//! Fuzz target: conversion of an older-format (v1) segment on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzzing::store::segment_upgrade(data));
