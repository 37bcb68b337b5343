//! syncline-testkit
