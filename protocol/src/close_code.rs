//! The WebSocket close codes of the protocol (`docs/PROTOCOL.md`, "Close codes"): which the relay
//! sends, and what each asks of a device. Both ends use these names, never the numbers.

/// A normal close (the device or the relay is done).
pub const NORMAL: u16 = 1000;
/// The relay is shutting down; reconnect (to it or another relay) after the usual backoff.
pub const GOING_AWAY: u16 = 1001;
/// The peer does not speak the protocol (no common version, too many bad frames); retrying
/// unchanged will not help.
pub const PROTOCOL_ERROR: u16 = 1002;
/// No close frame came with the close (a code the WebSocket layer reports, never sent).
pub const NO_STATUS: u16 = 1005;
/// The token expired and no fresh one came: get a new token, then reconnect.
pub const TOKEN_EXPIRED: u16 = 4001;
/// Nothing arrived for longer than the idle timeout.
pub const IDLE: u16 = 4002;
/// A refreshed token names another identity (user, device or tenant).
pub const IDENTITY_CHANGED: u16 = 4003;
/// Limits were breached repeatedly.
pub const LIMITS: u16 = 4008;
/// The device could not keep up with what the relay had to send it; reconnect and reconcile
/// from storage.
pub const SLOW_CONSUMER: u16 = 4009;

/// The token's device id is bound to another user (the first that connected it).
pub const DEVICE_OWNED: u16 = 4010;

/// True for the codes after which reconnecting with the same token cannot succeed: the app
/// must see the reason (a new token, or a newer client, is needed).
pub fn needs_attention(code: u16) -> bool {
    matches!(
        code,
        TOKEN_EXPIRED | IDENTITY_CHANGED | PROTOCOL_ERROR | DEVICE_OWNED
    )
}
