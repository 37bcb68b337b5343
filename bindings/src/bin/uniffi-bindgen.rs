//! The in-workspace `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings of
//! `syncline-ffi` from the built library (`cargo xtask bindings`).

fn main() {
    uniffi::uniffi_bindgen_main();
}
