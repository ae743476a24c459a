//! Entry points for the cargo-fuzz targets in `fuzz/`: each takes arbitrary bytes and drives
//! one parser of outside input. Hidden from the docs; not part of the public API.
pub mod store;
