//! Syncline's end-to-end tests live in `tests/` of this crate; `src/bin` holds the helper
//! programs they drive (for instance `crash-writer`, killed mid-write by the crash test).
//! Nothing depends on this crate.
