// Tokens: the closure an app gives `SyncClient.start`, and `TokenError`, what it throws when it
// has no token, as the generated layer's token provider.

import SynclineCore

/// What a token closure throws when it has no token.
public enum TokenError: Error, Hashable, Sendable {
    /// The app cannot authenticate (signed out, access revoked): the client stops connecting
    /// and reports `SyncError.unauthorized`, as for a token the relay refuses.
    case signedOut(reason: String)
    /// No token right now (the app's own auth service is unreachable, say): the client retries
    /// with backoff, as for an unreachable relay. Any other error the closure throws counts as
    /// this one, with the error's description as the reason.
    case unavailable(reason: String)
}

/// An app's token closure as the generated layer's provider. The SDK calls it on a thread of
/// its own, never the app's: the closure may block while it refreshes a token.
final class TokenClosure: FfiTokenProvider {
    private let fetch: @Sendable () throws -> String

    init(_ fetch: @escaping @Sendable () throws -> String) {
        self.fetch = fetch
    }

    func token() throws -> String {
        do {
            return try fetch()
        } catch TokenError.signedOut(let reason) {
            throw FfiTokenError.SignedOut(reason: reason)
        } catch TokenError.unavailable(let reason) {
            throw FfiTokenError.Unavailable(reason: reason)
        } catch {
            throw FfiTokenError.Unavailable(reason: String(describing: error))
        }
    }
}
