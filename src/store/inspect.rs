//! `backstop inspect`: a read-only report of a store directory (placeholder until written).
