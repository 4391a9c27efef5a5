//! Session ids. A sid is `<node id>~<22 chars>`: the owner node, then 128 bits from a
//! CSPRNG in URL-safe base64, so a sid can neither be guessed nor
//! collide, and any node can tell which node owns it.

use base64::Engine as _;
use rand::RngCore;

/// A new session id owned by `node_id`.
pub fn new_sid(node_id: &str) -> String {
    let mut raw = [0u8; 16];
    // ThreadRng is ChaCha12, seeded and periodically reseeded from the OS: a CSPRNG.
    rand::rng().fill_bytes(&mut raw);
    let mut out = String::with_capacity(node_id.len() + 23);
    out.push_str(node_id);
    out.push('~');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut out);
    out
}

/// The owner node named by a sid, if it has the shoal form.
pub fn owner_of(sid: &str) -> Option<&str> {
    sid.split_once('~').map(|(node, _)| node)
}

/// True if `id` may name a node: 1 to 64 letters, digits, `-` and `_`. A node id is the
/// prefix of its sids, travels in URLs and Redis keys, and must not contain `~`.
pub fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An id that is random enough for the sockets of one namespace (same form, no node).
pub fn new_socket_id() -> String {
    let mut raw = [0u8; 15];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A short random node id for a standalone node: 8 lowercase base32 characters.
pub fn random_node_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut raw = [0u8; 8];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| ALPHABET[(*b & 31) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sid_names_its_owner_and_is_unique() {
        let a = new_sid("node1");
        let b = new_sid("node1");
        assert_ne!(a, b);
        assert_eq!(owner_of(&a), Some("node1"));
        assert_eq!(a.len(), "node1~".len() + 22);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_~".contains(&c)));
    }

    #[test]
    fn node_ids() {
        assert!(is_valid_node_id("n1"));
        assert!(is_valid_node_id(&random_node_id()));
        assert!(is_valid_node_id("eu-west_3"));
        for bad in ["", "a~b", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(!is_valid_node_id(bad), "{bad:?}");
        }
    }
}
