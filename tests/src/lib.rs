//! syncline-tests
