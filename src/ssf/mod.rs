//! Shared Signals receiver (placeholder).
