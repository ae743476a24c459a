//! Token engine benches (placeholder until the bench lands).
fn main() {}
