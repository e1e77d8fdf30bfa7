//! `appsecret_proof`: proves to Meta that a call made with a token comes from the app's server.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `appsecret_proof` parameter for a call made with `access_token`: the lowercase hex
/// HMAC-SHA256 of the token, keyed by the secret of the app the token was issued for.
///
/// Meta rejects a call whose proof does not match (code 100, "Invalid appsecret_proof provided in the
/// API argument"), and requires one on every call when the app has "Require App Secret" turned on.
pub fn appsecret_proof(access_token: &str, app_secret: &str) -> String {
    // HMAC accepts keys of any length (longer ones are hashed first), so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(access_token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::appsecret_proof;

    #[test]
    fn matches_rfc_4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            appsecret_proof("what do ya want for nothing?", "Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn matches_a_proof_computed_once_elsewhere() {
        // Computed with Python: hmac.new(b"app-secret-123", b"EAAGm0PX4ZCpsBAKZC0", sha256).hexdigest()
        assert_eq!(
            appsecret_proof("EAAGm0PX4ZCpsBAKZC0", "app-secret-123"),
            "62f337aeb098582d87c3428d6afca479e48acc670f17083b8eb19ff0600129c9"
        );
    }

    #[test]
    fn is_keyed_by_the_secret_not_the_token() {
        assert_ne!(appsecret_proof("a", "b"), appsecret_proof("b", "a"));
        assert_eq!(appsecret_proof("token", "secret").len(), 64);
    }
}
