//! syncline-bench
