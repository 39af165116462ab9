//! Standard Webhooks signing: `whsec_` secrets and the `webhook-signature` header.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; each active secret adds
//! one `v1,<base64 HMAC-SHA256>` to the header, space-separated, so a partner verifies with
//! whichever secret it holds while a rotation is under way.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// The prefix of a secret's text form.
pub const PREFIX: &str = "whsec_";

/// A signing secret (24–64 bytes; new ones are 32 random bytes). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// Why a secret was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a signing secret is base64 after `whsec_`: {0}")]
    Encoding(String),
    #[error("a signing secret has 24 to 64 bytes, not {0}")]
    Length(usize),
}

impl Secret {
    /// A new secret of 32 random bytes from the operating system's generator.
    pub fn generate() -> Secret {
        Secret(rand::random::<[u8; 32]>().to_vec())
    }

    /// Reads `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix(PREFIX).unwrap_or(b64);
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| SecretError::Encoding(e.to_string()))?;
        Secret::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Secret, SecretError> {
        if (24..=64).contains(&bytes.len()) {
            Ok(Secret(bytes))
        } else {
            Err(SecretError::Length(bytes.len()))
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text form handed to the partner once: `whsec_<base64>`.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `v1` signature of one message with this secret.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length; `from_bytes` bounds them anyway.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The `webhook-signature` header value: one `v1` signature per secret.
pub fn signature_header(id: &str, timestamp: i64, body: &[u8], secrets: &[Secret]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // The example in the Standard Webhooks specification (and every reference library's
        // test suite): this secret, id, timestamp and body give this signature.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = Secret::generate();
        assert_eq!(s.bytes().len(), 32);
        assert_eq!(Secret::parse(&s.reveal()).unwrap(), s);
        assert_ne!(Secret::generate(), s);
        assert!(format!("{s:?}").contains("32 bytes"));
        assert!(!format!("{s:?}").contains(&s.reveal()[6..]));
        assert!(matches!(
            Secret::parse("whsec_not base64!"),
            Err(SecretError::Encoding(_))
        ));
        assert_eq!(
            Secret::parse(&format!("{PREFIX}{}", STANDARD.encode([1u8; 8]))),
            Err(SecretError::Length(8))
        );
    }

    #[test]
    fn one_signature_per_secret() {
        let a = Secret::generate();
        let b = Secret::generate();
        let h = signature_header("msg_1", 5, b"{}", &[a.clone(), b.clone()]);
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(
            parts,
            vec![a.sign("msg_1", 5, b"{}"), b.sign("msg_1", 5, b"{}")]
        );
    }
}
