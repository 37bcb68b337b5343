//! [`FfiSubscription`]: keeps a listener registered until cancelled or dropped.

use std::sync::{Arc, Mutex};

/// Keeps a listener registered; `cancel` (or dropping it on the foreign side) unregisters.
#[derive(uniffi::Object)]
pub struct FfiSubscription {
    inner: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl FfiSubscription {
    /// Wraps whatever keeps the listener alive (an SDK `Subscription`).
    pub(crate) fn new(inner: Box<dyn std::any::Any + Send>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Some(inner)),
        })
    }
}

#[uniffi::export]
impl FfiSubscription {
    /// Stops the listener now; once this returns it is not running and is not called again.
    pub fn cancel(&self) {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(taken);
    }
}
