//! The `backstop` binary: wires the command line to the library and nothing else.

fn main() {}
