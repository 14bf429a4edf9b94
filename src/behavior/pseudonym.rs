//! Shopper ids at rest: a user id -> an HMAC-SHA256 pseudonym under a secret key, so the
//! event store and the experiment logs never hold the ids a shop sends. The same id always
//! maps to the same pseudonym (profiles and A/B attribution still work); without the key
//! a pseudonym cannot be turned back into the id, nor a guessed id checked against it.
//!
//! The key is `user_id_secret` from the settings, or else a random key the data directory
//! keeps in `user_id.secret` (created 0600 on first use). Losing or changing the key
//! orphans every stored profile (the events stay, under pseudonyms nobody maps to).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The file a data directory keeps its pseudonym key in.
pub const SECRET_FILE: &str = "user_id.secret";

/// HMAC's block size for SHA-256.
const BLOCK: usize = 64;

/// Maps user ids to their pseudonyms. Holds the key already XORed with HMAC's inner and
/// outer pads, so a search with a user costs two hashes and nothing else.
#[derive(Clone)]
pub struct Pseudonyms {
    inner_pad: [u8; BLOCK],
    outer_pad: [u8; BLOCK],
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(<key hidden>)")
    }
}

impl Pseudonyms {
    /// Pseudonyms under `secret`.
    pub fn new(secret: &str) -> Self {
        let secret = secret.as_bytes();
        let mut key = [0u8; BLOCK];
        if secret.len() > BLOCK {
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        Pseudonyms {
            inner_pad: key.map(|k| k ^ 0x36),
            outer_pad: key.map(|k| k ^ 0x5c),
        }
    }

    /// The data directory's key: read from `user_id.secret`, or created there.
    pub fn for_data_dir(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(Self::new(text.trim())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| Error::Internal(format!("no random source: {e}")))?;
        let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
        crate::util::write_atomic(&path, secret.as_bytes())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self::new(&secret))
    }

    /// Whether `id` has a pseudonym's form (`u_` and 32 lowercase hex digits).
    pub fn is_pseudonym(id: &str) -> bool {
        id.strip_prefix("u_").is_some_and(|h| {
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }

    /// The pseudonym of `user`: `u_` and the first 128 bits of HMAC-SHA256(key, user),
    /// hex (RFC 2104). An id that already has a pseudonym's form is taken as one (so the
    /// ids `GET /users` lists work as `user=` too).
    pub fn of(&self, user: &str) -> String {
        if Self::is_pseudonym(user) {
            return user.to_string();
        }
        let inner = Sha256::new()
            .chain_update(self.inner_pad)
            .chain_update(user.as_bytes())
            .finalize();
        let mac = Sha256::new()
            .chain_update(self.outer_pad)
            .chain_update(inner)
            .finalize();
        let hex: String = mac[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("u_{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_hmac_sha256_stable_and_keyed() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let p = Pseudonyms::new("Jefe");
        assert_eq!(
            p.of("what do ya want for nothing?"),
            "u_5bdcc146bf60754e6a042426089575c7"
        );
        assert_eq!(p.of("u1"), p.of("u1"));
        let listed = p.of("u1");
        assert!(Pseudonyms::is_pseudonym(&listed));
        assert_eq!(p.of(&listed), listed, "a listed pseudonym maps to itself");
        assert!(!Pseudonyms::is_pseudonym("u_123") && !Pseudonyms::is_pseudonym("shopper-1"));
        assert_ne!(p.of("u1"), p.of("u2"));
        assert_ne!(p.of("u1"), Pseudonyms::new("other").of("u1"));
        let dir = tempfile::tempdir().unwrap();
        let a = Pseudonyms::for_data_dir(dir.path()).unwrap();
        let b = Pseudonyms::for_data_dir(dir.path()).unwrap();
        assert_eq!(a.of("shopper"), b.of("shopper"));
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }
}
