//! Signed webhook requests, so an executor can tell lanes' requests from anyone's.
//!
//! With `LANES_WEBHOOK_SECRET` set, every request the `webhook` task sends an executor carries
//! `Lanes-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>`,
//! the scheme of well-known webhook senders: the timestamp inside the signed text bounds how
//! long a captured request can be replayed (an executor accepts a few minutes and remembers
//! the signatures it saw within them), and the body cannot be changed without the secret.
//! `verify` is what an executor does; `examples/executor.py` does the same in Python.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "Lanes-Signature";

/// How far a signature's time may be from the executor's clock.
pub const TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], at: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(at.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header's value for `body` sent at `at` (unix seconds).
pub fn sign(secret: &[u8], at: i64, body: &[u8]) -> String {
    let digest = mac(secret, at, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={at},v1={hex}")
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no `{HEADER}` header, or not `t=…,v1=…`")]
    Malformed,
    #[error("signed {0} s away from now (more than {TOLERANCE_SECS} s)")]
    Stale(i64),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a request's `Lanes-Signature` header against its body, at `now` (unix seconds).
/// Returns the signature's time. Comparison is constant-time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<i64, Refused> {
    let (mut at, mut v1) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => at = t.parse::<i64>().ok(),
            Some(("v1", hex)) => v1 = decode_hex(hex),
            _ => {}
        }
    }
    let (Some(at), Some(v1)) = (at, v1) else {
        return Err(Refused::Malformed);
    };
    if (now - at).abs() > TOLERANCE_SECS {
        return Err(Refused::Stale(now - at));
    }
    mac(secret, at, body)
        .verify_slice(&v1)
        .map(|_| at)
        .map_err(|_| Refused::Mismatch)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_signature_verifies_only_its_own_body_secret_and_time() {
        let (secret, body, at) = (
            b"s3cret".as_slice(),
            b"{\"id\":1}".as_slice(),
            1_700_000_000,
        );
        let header = sign(secret, at, body);
        assert!(header.starts_with(&format!("t={at},v1=")));
        assert_eq!(verify(secret, &header, body, at + 10), Ok(at));
        assert_eq!(
            verify(secret, &header, b"{\"id\":2}", at),
            Err(Refused::Mismatch)
        );
        assert_eq!(verify(b"other", &header, body, at), Err(Refused::Mismatch));
        assert_eq!(
            verify(secret, &header, body, at + TOLERANCE_SECS + 1),
            Err(Refused::Stale(TOLERANCE_SECS + 1))
        );
        // The time is signed: moving it breaks the signature.
        let moved = header.replace(&format!("t={at}"), &format!("t={}", at + 5));
        assert_eq!(verify(secret, &moved, body, at), Err(Refused::Mismatch));
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=0"] {
            assert_eq!(
                verify(secret, bad, body, 1),
                Err(Refused::Malformed),
                "{bad}"
            );
        }
    }

    /// A reference vector (computed with Python's hmac), so other languages can check theirs.
    #[test]
    fn matches_the_reference_vector() {
        assert_eq!(sign(b"secret", 1, b"body"), format!("t=1,v1={}", REFERENCE));
    }

    /// HMAC-SHA256 of "1.body" under "secret".
    const REFERENCE: &str = "842b24d9575dee4b6ec460b7e3af7d683501d84fe6279102340787c79d2e2bab";

    proptest! {
        #[test]
        fn any_body_signed_now_verifies(body in proptest::collection::vec(any::<u8>(), 0..256), at in 0i64..4_000_000_000) {
            let header = sign(b"k", at, &body);
            prop_assert_eq!(verify(b"k", &header, &body, at), Ok(at));
        }
    }
}
