//! Engine tests without sockets: a relay hub is not available here, so these drive the engine with hand-made frames.
