//! Shared helpers for the kdns benchmarks.
