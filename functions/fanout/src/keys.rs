//! Signing secrets at rest: sealed with AES-256-GCM under a keyring the platform's secret
//! store provides, so a database dump holds no usable secret.
//!
//! The keyring is `<key id>:<base64 of 32 bytes>` entries, separated by commas or whitespace
//! (`FERRY_WEBHOOK_KEYS`; on Lambda read from the Secrets Manager secret named by
//! `FERRY_WEBHOOK_KEYS_SECRET_ARN`; on Azure a Key Vault reference; locally a key file). The
//! first key seals new secrets; every key opens. Each stored secret names its key, so a key is
//! rotated without downtime: add the new key last, move it first, `ferry secrets rekey`,
//! remove the old one.
//!
//! A sealed secret is `ferry1 ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`, with the
//! endpoint id as associated data: a sealed secret copied onto another endpoint does not open.
//! The six-byte mark makes a sealed 32-byte secret 66 bytes long, more than the 64 that a
//! fanout of an earlier release takes as a secret: during a rolling deploy such a fanout finds
//! no usable secret and retries later, instead of signing with the sealed bytes.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use thiserror::Error;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// The first bytes of every sealed secret (format version 1).
pub const SEALED_MARK: &[u8; 6] = b"ferry1";

/// Why a keyring or a sealed secret could not be used. Never holds key or secret bytes.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the keyring is empty: expected <key id>:<base64 of 32 bytes>, e.g. from `ferry secrets new-key k1`")]
    Empty,
    #[error("keyring entry {0}: expected <key id>:<base64 of 32 bytes>")]
    Entry(usize),
    #[error("keyring entry {0}: the key id must be 1-32 of a-z, 0-9, - and _")]
    KeyId(usize),
    #[error("keyring entry {0}: the key is not 32 bytes of base64")]
    KeyBytes(usize),
    #[error("keyring entry {0}: key id {1:?} appears twice")]
    Duplicate(usize, String),
    #[error("the secret is sealed under key {0:?}, which is not in the keyring")]
    UnknownKey(String),
    #[error("the secret under key {0:?} does not open: wrong key, or altered")]
    Open(String),
    #[error("the secret could not be sealed")]
    Seal,
    #[error(
        "no keyring: signing secrets are stored sealed; set FERRY_WEBHOOK_KEYS (or \
         FERRY_WEBHOOK_KEYS_FILE) to <key id>:<base64 of 32 bytes>, e.g. from \
         `ferry secrets new-key k1`"
    )]
    Missing,
}

/// The keys, current first. No `Debug` of key bytes.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, [u8; KEY_LEN])>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parses keyring text (see the module documentation).
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys: Vec<(String, [u8; KEY_LEN])> = Vec::new();
        for (i, entry) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let n = i + 1;
            let (id, b64) = entry.split_once(':').ok_or(KeyError::Entry(n))?;
            let valid_id = !id.is_empty()
                && id.len() <= 32
                && id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid_id {
                return Err(KeyError::KeyId(n));
            }
            let key: [u8; KEY_LEN] = STANDARD
                .decode(b64)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(KeyError::KeyBytes(n))?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(KeyError::Duplicate(n, id.to_owned()));
            }
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// A fresh keyring entry, `<id>:<base64 of 32 random bytes>`, for `ferry secrets new-key`
    /// and the local key file.
    pub fn new_entry(id: &str) -> String {
        format!("{id}:{}", STANDARD.encode(rand::random::<[u8; KEY_LEN]>()))
    }

    /// The id of the key that seals new secrets.
    pub fn current(&self) -> &str {
        &self.keys[0].0
    }

    /// Every key id, current first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    fn key(&self, id: &str) -> Option<LessSafeKey> {
        let (_, bytes) = self.keys.iter().find(|(k, _)| k == id)?;
        UnboundKey::new(&AES_256_GCM, bytes)
            .ok()
            .map(LessSafeKey::new)
    }

    /// Seals a secret of `endpoint_id` under the current key: returns the key id and the
    /// sealed bytes.
    pub fn seal(&self, endpoint_id: i64, secret: &[u8]) -> Result<(String, Vec<u8>), KeyError> {
        let id = self.current();
        let key = self.key(id).ok_or(KeyError::Seal)?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut sealed = secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            aad(endpoint_id),
            &mut sealed,
        )
        .map_err(|_| KeyError::Seal)?;
        let mut out = Vec::with_capacity(SEALED_MARK.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(SEALED_MARK);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok((id.to_owned(), out))
    }

    /// Opens a secret of `endpoint_id` sealed under `key_id`.
    pub fn open(&self, endpoint_id: i64, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self
            .key(key_id)
            .ok_or_else(|| KeyError::UnknownKey(key_id.to_owned()))?;
        let fail = || KeyError::Open(key_id.to_owned());
        let Some(sealed) = sealed.strip_prefix(SEALED_MARK) else {
            return Err(fail());
        };
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = body.to_vec();
        let plain = key
            .open_in_place(nonce, aad(endpoint_id), &mut buf)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

fn aad(endpoint_id: i64) -> Aad<[u8; 29]> {
    let mut a = [0u8; 29];
    a[..21].copy_from_slice(b"ferry-webhook-secret:");
    a[21..].copy_from_slice(&endpoint_id.to_be_bytes());
    Aad::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Keyring {
        let text: Vec<String> = ids.iter().map(|id| Keyring::new_entry(id)).collect();
        Keyring::parse(&text.join(",")).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_under_its_key_and_endpoint_only() {
        let keys = ring(&["k2", "k1"]);
        let (id, sealed) = keys.seal(7, b"whsec-bytes-0123456789abcdef0123").unwrap();
        assert_eq!(id, "k2", "the first key seals");
        assert_eq!(sealed.len(), 6 + NONCE_LEN + 32 + 16);
        assert!(
            crate::sign::Secret::from_bytes(sealed.clone()).is_err(),
            "an earlier release, which takes 24-64 bytes as a secret, cannot sign with it"
        );
        assert!(
            !sealed.windows(8).any(|w| w == b"whsec-by"),
            "no plaintext in the sealed bytes"
        );
        assert_eq!(
            keys.open(7, "k2", &sealed).unwrap(),
            b"whsec-bytes-0123456789abcdef0123"
        );
        assert_eq!(
            keys.open(8, "k2", &sealed),
            Err(KeyError::Open("k2".into()))
        );
        assert_eq!(
            keys.open(7, "k1", &sealed),
            Err(KeyError::Open("k1".into()))
        );
        assert_eq!(
            keys.open(7, "k9", &sealed),
            Err(KeyError::UnknownKey("k9".into()))
        );
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert_eq!(
            keys.open(7, "k2", &altered),
            Err(KeyError::Open("k2".into()))
        );
        assert_eq!(
            keys.open(7, "k2", &sealed[..5]),
            Err(KeyError::Open("k2".into()))
        );
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(
            keys.seal(7, b"same").unwrap().1,
            keys.seal(7, b"same").unwrap().1
        );
    }

    #[test]
    fn keyrings_are_parsed_strictly_and_never_echo_a_key() {
        let entry = Keyring::new_entry("k1");
        let k = Keyring::parse(&format!("  {entry}\n{}  ", Keyring::new_entry("old-0"))).unwrap();
        assert_eq!(k.ids().collect::<Vec<_>>(), ["k1", "old-0"]);
        assert_eq!(Keyring::parse(" , \n").unwrap_err(), KeyError::Empty);
        assert_eq!(Keyring::parse("k1").unwrap_err(), KeyError::Entry(1));
        assert_eq!(
            Keyring::parse(&format!("{entry},K2:AAAA")).unwrap_err(),
            KeyError::KeyId(2)
        );
        assert_eq!(
            Keyring::parse("k1:AAAA").unwrap_err(),
            KeyError::KeyBytes(1)
        );
        assert_eq!(
            Keyring::parse(&format!("{entry},{entry}")).unwrap_err(),
            KeyError::Duplicate(2, "k1".into())
        );
        let b64 = entry.split_once(':').unwrap().1;
        assert!(!format!("{k:?}").contains(b64));
        for e in [
            Keyring::parse(&format!("{entry},k2:{b64}x")).unwrap_err(),
            Keyring::parse(b64).unwrap_err(),
        ] {
            assert!(!e.to_string().contains(b64), "{e}");
        }
    }
}
