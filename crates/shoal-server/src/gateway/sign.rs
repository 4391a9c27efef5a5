//! Signing of the requests shoal sends to the app: HMAC-SHA256 over the exact body bytes
//! with the shared `[proxy] secret`, in the header `x-shoal-signature: sha256=<hex>`.
//! The app computes the same over the body it received and refuses a request whose
//! header differs (docs/gateway.md has a Node.js check).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-shoal-signature";

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<64 lower-case hex digits>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // An HMAC takes a key of any length: new_from_slice cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}

/// True if `header` is the signature of `body` under `secret` (compared in constant time).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else { return false };
    if hex.len() != 64 {
        return false;
    }
    let mut expected = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let (Some(hi), Some(lo)) = ((pair[0] as char).to_digit(16), (pair[1] as char).to_digit(16)) else { return false };
        expected[i] = (hi * 16 + lo) as u8;
    }
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_test_case_2() {
        // Key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc_4231_test_case_6_long_key() {
        let key = [0xaau8; 131];
        assert_eq!(
            sign(&key, b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn verify_accepts_the_signature_and_nothing_else() {
        let body = br#"{"event":"chat","args":["hi"]}"#;
        let sig = sign(b"s3cret", body);
        assert!(verify(b"s3cret", body, &sig));
        assert!(!verify(b"other", body, &sig), "another secret");
        assert!(!verify(b"s3cret", br#"{"event":"chat","args":["ho"]}"#, &sig), "another body");
        assert!(!verify(b"s3cret", body, &sig[7..]), "no scheme");
        assert!(!verify(b"s3cret", body, "sha256=zz"), "garbage");
        assert!(!verify(b"s3cret", body, &format!("sha256={}", "g".repeat(64))), "not hex");
    }
}
