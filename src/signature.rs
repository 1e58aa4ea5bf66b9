//! URL signatures: `base64url_nopad(HMAC-SHA256(key, salt || path))`, truncated
//! to the configured size, checked against every configured key/salt pair so
//! keys can be rotated without breaking URLs already handed out.

use std::fmt;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// `IMGPROXY_SIGNATURE_SIZE`: bytes of the HMAC kept in a signature (1..=32). Shorter
/// signatures make shorter URLs at the cost of strength.
pub const DEFAULT_SIGNATURE_SIZE: usize = 32;

/// HMAC-SHA256 output length, the longest possible signature.
const MAX_SIGNATURE_SIZE: usize = 32;

/// imgproxy decodes signatures with Go's non-strict raw URL decoder, which
/// ignores the unused low bits of the last character; this engine does the same
/// so a signature imgproxy accepts is accepted here.
const LENIENT_URL_SAFE_NO_PAD: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// A bad signing setting, found at start-up. Messages name the variable but
/// never echo key material into logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureConfigError {
    #[error("{var}: entry #{index} of the comma-separated list is not valid hex")]
    BadHex { var: &'static str, index: usize },
    #[error("IMGPROXY_KEY has {keys} entries but IMGPROXY_SALT has {salts}; they must pair up")]
    LengthMismatch { keys: usize, salts: usize },
    #[error("IMGPROXY_SIGNATURE_SIZE must be within 1..=32, got {0}")]
    SizeOutOfRange(usize),
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not unpadded base64url")]
    Malformed,
    #[error("signature does not match any key/salt pair")]
    Mismatch,
}

/// Signs paths with one key/salt pair.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    salt: Vec<u8>,
    size: usize,
}

/// Checks request signatures. With no key/salt pairs, signing is off and any
/// non-empty signature segment passes (imgproxy's `insecure`/`unsafe`/`_`).
#[derive(Clone, Default)]
pub struct SignatureVerifier {
    /// Any pair may match: the first is the current one, the rest are kept
    /// during key rotation.
    signers: Vec<Signer>,
    /// Signatures accepted verbatim for any path (`IMGPROXY_TRUSTED_SIGNATURES`):
    /// as secret as the keys.
    trusted: Vec<String>,
}

// === impl Signer ===

impl Signer {
    /// # Errors
    /// [`SignatureConfigError::SizeOutOfRange`] unless `1 <= size <= 32`.
    pub fn new(key: Vec<u8>, salt: Vec<u8>, size: usize) -> Result<Self, SignatureConfigError> {
        if !(1..=MAX_SIGNATURE_SIZE).contains(&size) {
            return Err(SignatureConfigError::SizeOutOfRange(size));
        }
        Ok(Self { key, salt, size })
    }

    /// The signature segment for `path` (everything after the signature,
    /// leading `/` included).
    pub fn sign(&self, path: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(path))
    }

    fn mac(&self, path: &str) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(&self.salt);
        mac.update(path.as_bytes());
        let mut bytes = mac.finalize().into_bytes().to_vec();
        bytes.truncate(self.size);
        bytes
    }
}

impl fmt::Debug for Signer {
    // Keys and salts are secrets: keep them out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

// === impl SignatureVerifier ===

impl SignatureVerifier {
    /// Builds the verifier from the raw env values: `key` and `salt` are
    /// comma-separated hex lists of equal length (`IMGPROXY_KEY`,
    /// `IMGPROXY_SALT`; empty means unset), `trusted` is the comma-separated
    /// `IMGPROXY_TRUSTED_SIGNATURES`.
    ///
    /// # Errors
    /// Bad hex (naming the variable), unequal list lengths, or a size outside 1..=32.
    pub fn from_env(
        key: &str,
        salt: &str,
        size: usize,
        trusted: &str,
    ) -> Result<Self, SignatureConfigError> {
        let keys = decode_hex_list("IMGPROXY_KEY", key)?;
        let salts = decode_hex_list("IMGPROXY_SALT", salt)?;
        if keys.len() != salts.len() {
            return Err(SignatureConfigError::LengthMismatch {
                keys: keys.len(),
                salts: salts.len(),
            });
        }
        // Checked even when signing is off, so a typo fails start-up either way.
        if !(1..=MAX_SIGNATURE_SIZE).contains(&size) {
            return Err(SignatureConfigError::SizeOutOfRange(size));
        }
        let signers = keys
            .into_iter()
            .zip(salts)
            .map(|(key, salt)| Signer::new(key, salt, size))
            .collect::<Result<_, _>>()?;
        let trusted = trusted
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self { signers, trusted })
    }

    /// The pair new URLs should be signed with (the first configured), if any.
    pub fn signer(&self) -> Option<&Signer> {
        self.signers.first()
    }

    /// Whether signatures are checked at all.
    pub fn is_enabled(&self) -> bool {
        !self.signers.is_empty()
    }

    /// Checks `signature` against `path` (the rest of the request path,
    /// leading `/` included).
    ///
    /// # Errors
    /// [`SignatureError::Malformed`] for an empty or non-base64url signature when
    /// signing is on, [`SignatureError::Mismatch`] when no pair matches.
    pub fn verify(&self, signature: &str, path: &str) -> Result<(), SignatureError> {
        if signature.is_empty() {
            return Err(SignatureError::Malformed);
        }
        if self.signers.is_empty() {
            return Ok(());
        }
        // Constant-time comparisons everywhere: an attacker must not learn how
        // many leading bytes of a forged signature were right.
        if self
            .trusted
            .iter()
            .any(|t| bool::from(t.as_bytes().ct_eq(signature.as_bytes())))
        {
            return Ok(());
        }
        let given = LENIENT_URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| SignatureError::Malformed)?;
        let matched = self.signers.iter().fold(subtle::Choice::from(0), |acc, s| {
            acc | s.mac(path).ct_eq(&given)
        });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

impl fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("signers", &self.signers)
            .field("trusted", &self.trusted.len())
            .finish()
    }
}

fn decode_hex_list(var: &'static str, list: &str) -> Result<Vec<Vec<u8>>, SignatureConfigError> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .enumerate()
        .map(|(index, entry)| {
            decode_hex(entry.trim()).ok_or(SignatureConfigError::BadHex { var, index })
        })
        .collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi << 4 | lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_PATH: &str =
        "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
    const DOC_SIGNATURE: &str = "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8";

    fn docs_verifier(size: usize) -> SignatureVerifier {
        SignatureVerifier::from_env("736563726574", "68656C6C6F", size, "").unwrap()
    }

    // The vector from imgproxy's "Signing the URL" guide: proves we compute
    // exactly what imgproxy computes.
    #[test]
    fn docs_vector_signs_and_verifies() {
        let v = docs_verifier(DEFAULT_SIGNATURE_SIZE);
        assert_eq!(v.signer().unwrap().sign(DOC_PATH), DOC_SIGNATURE);
        assert_eq!(v.verify(DOC_SIGNATURE, DOC_PATH), Ok(()));
        assert_eq!(
            v.verify(
                DOC_SIGNATURE,
                "/rs:fill:300:401:0/g:sm/aHR0cDovL2V4YW1w.png"
            ),
            Err(SignatureError::Mismatch)
        );
    }

    // Truncation keeps the leading bytes of the full HMAC, so a short
    // signature is the base64 of a prefix of the full one.
    #[test]
    fn truncated_sizes() {
        let full = URL_SAFE_NO_PAD.decode(DOC_SIGNATURE).unwrap();
        for size in [1, 8, 16, 31, 32] {
            let v = docs_verifier(size);
            let sig = v.signer().unwrap().sign(DOC_PATH);
            assert_eq!(sig, URL_SAFE_NO_PAD.encode(&full[..size]), "size {size}");
            assert_eq!(v.verify(&sig, DOC_PATH), Ok(()));
            // The full signature is not accepted when a shorter one is configured.
            if size < 32 {
                assert_eq!(
                    v.verify(DOC_SIGNATURE, DOC_PATH),
                    Err(SignatureError::Mismatch)
                );
            }
        }
        assert_eq!(
            docs_verifier(8).signer().unwrap().sign(DOC_PATH),
            "oKfUtW34Dvo"
        );
    }

    // Old and new pairs both verify during rotation; a pair's key never
    // combines with another pair's salt.
    #[test]
    fn key_rotation_accepts_any_pair() {
        let v = SignatureVerifier::from_env("736563726574,6e6577", "68656C6C6F,73616c74", 32, "")
            .unwrap();
        let old = Signer::new(b"secret".to_vec(), b"hello".to_vec(), 32).unwrap();
        let new = Signer::new(b"new".to_vec(), b"salt".to_vec(), 32).unwrap();
        let crossed = Signer::new(b"secret".to_vec(), b"salt".to_vec(), 32).unwrap();
        assert_eq!(old.sign(DOC_PATH), DOC_SIGNATURE);
        assert_eq!(v.verify(&old.sign("/a/b"), "/a/b"), Ok(()));
        assert_eq!(v.verify(&new.sign("/a/b"), "/a/b"), Ok(()));
        assert_eq!(
            v.verify(&crossed.sign("/a/b"), "/a/b"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(v.signer().unwrap().sign(DOC_PATH), DOC_SIGNATURE);
    }

    #[test]
    fn trusted_signatures_pass_verbatim() {
        let v = SignatureVerifier::from_env("736563726574", "68656C6C6F", 32, "abc, trusted-1")
            .unwrap();
        assert_eq!(v.verify("trusted-1", "/anything"), Ok(()));
        assert_eq!(v.verify("abc", "/anything"), Ok(()));
        assert_eq!(v.verify("abd", "/anything"), Err(SignatureError::Mismatch));
    }

    #[test]
    fn disabled_accepts_any_non_empty_segment() {
        let v = SignatureVerifier::from_env("", "", 32, "").unwrap();
        assert!(!v.is_enabled());
        assert!(v.signer().is_none());
        for sig in ["insecure", "unsafe", "_", "not base64 at all!"] {
            assert_eq!(v.verify(sig, "/x"), Ok(()));
        }
        assert_eq!(v.verify("", "/x"), Err(SignatureError::Malformed));
    }

    #[test]
    fn malformed_signatures() {
        let v = docs_verifier(32);
        assert_eq!(
            v.verify("unsafe!", DOC_PATH),
            Err(SignatureError::Malformed)
        );
        // Padding is not part of imgproxy's signature format.
        let padded = format!("{DOC_SIGNATURE}=");
        assert_eq!(v.verify(&padded, DOC_PATH), Err(SignatureError::Malformed));
        assert_eq!(v.verify("", DOC_PATH), Err(SignatureError::Malformed));
    }

    // Go's decoder ignores the 2 unused bits of the 43rd character; so do we.
    #[test]
    fn non_canonical_trailing_bits_are_tolerated() {
        let mut sig = DOC_SIGNATURE.to_owned();
        sig.pop();
        sig.push('9'); // '8' = 0b111100, '9' = 0b111101: same 4 data bits
        assert_eq!(docs_verifier(32).verify(&sig, DOC_PATH), Ok(()));
    }

    #[test]
    fn config_errors_name_the_variable() {
        let bad_key = SignatureVerifier::from_env("zz", "00", 32, "").unwrap_err();
        assert_eq!(
            bad_key,
            SignatureConfigError::BadHex {
                var: "IMGPROXY_KEY",
                index: 0
            }
        );
        assert!(bad_key.to_string().contains("IMGPROXY_KEY"));
        let bad_salt = SignatureVerifier::from_env("00", "00,abc", 32, "").unwrap_err();
        assert_eq!(
            bad_salt,
            SignatureConfigError::BadHex {
                var: "IMGPROXY_SALT",
                index: 1
            }
        );
        assert_eq!(
            SignatureVerifier::from_env("00,11", "00", 32, "").unwrap_err(),
            SignatureConfigError::LengthMismatch { keys: 2, salts: 1 }
        );
        assert_eq!(
            SignatureVerifier::from_env("00", "", 32, "").unwrap_err(),
            SignatureConfigError::LengthMismatch { keys: 1, salts: 0 }
        );
        for size in [0, 33] {
            assert_eq!(
                SignatureVerifier::from_env("00", "00", size, "").unwrap_err(),
                SignatureConfigError::SizeOutOfRange(size)
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let v = SignatureVerifier::from_env("736563726574", "68656C6C6F", 32, "trusted-1").unwrap();
        assert_eq!(
            format!("{v:?}"),
            "SignatureVerifier { signers: [Signer { size: 32, .. }], trusted: 1 }"
        );
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00fFa0"), Some(vec![0, 255, 160]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("é0"), None);
        assert_eq!(decode_hex(""), Some(vec![]));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        // Signing and verifying arbitrary input never panics, and a signature
        // always verifies against the path it was made for.
        #[test]
        fn sign_verify_never_panics(path in ".*", sig in ".*", size in 1usize..=32) {
            let v = docs_verifier(size);
            let _ = v.verify(&sig, &path);
            let signed = v.signer().unwrap().sign(&path);
            proptest::prop_assert_eq!(v.verify(&signed, &path), Ok(()));
        }
    }
}
