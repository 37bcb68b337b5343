//! syncline-relay
