//! The one error type a request path can fail with, and its HTTP status.

use super::signature::SignatureError;

/// Why a request path was refused. Messages are for logs; the HTTP layer sends
/// only the status and a short body, as imgproxy does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The signature segment does not match any configured key/salt pair.
    #[error("invalid signature: {0}")]
    InvalidSignature(#[from] SignatureError),
    /// The path has no usable shape: no signature segment, no source, bad encoding.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// An option name that imgproxy's open-source build does not know.
    #[error("unknown processing option `{0}`")]
    UnknownOption(String),
    /// A known option that `IMGPROXY_ALLOWED_PROCESSING_OPTIONS` leaves out.
    #[error("forbidden processing option `{0}`")]
    ForbiddenOption(String),
    /// A known option with a wrong argument count or value.
    #[error("invalid `{option}` argument: {reason}")]
    InvalidArgument { option: String, reason: String },
    /// A `preset` names a preset that isn't configured.
    #[error("unknown preset `{0}`")]
    UnknownPreset(String),
    /// A preset reaches itself again through `preset` options.
    #[error("preset `{0}` is used recursively")]
    RecursivePreset(String),
    /// The `expires` timestamp is in the past.
    #[error("URL expired at {expires} (now {now})")]
    Expired { expires: i64, now: i64 },
    /// A security option (`max_src_resolution`, ...) in the URL. imgproxy refuses
    /// these with 403 unless `IMGPROXY_ALLOW_SECURITY_OPTIONS` is on, which we
    /// don't offer.
    #[error("security processing option `{0}` is not allowed")]
    SecurityOption(String),
    /// Something imgproxy only offers in its Pro build (`enc` sources, `best`).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl ParseError {
    /// The HTTP status imgproxy answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidSignature(_) | Self::SecurityOption(_) => 403,
            Self::InvalidPath(_)
            | Self::UnknownOption(_)
            | Self::ForbiddenOption(_)
            | Self::InvalidArgument { .. }
            | Self::UnknownPreset(_)
            | Self::RecursivePreset(_)
            | Self::Expired { .. }
            | Self::Unsupported(_) => 404,
        }
    }

    pub(crate) fn invalid_path(reason: impl Into<String>) -> Self {
        Self::InvalidPath(reason.into())
    }

    pub(crate) fn invalid_arg(option: &str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            option: option.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The HTTP layer relies on this mapping being exactly imgproxy's.
    #[test]
    fn status_codes_follow_imgproxy() {
        assert_eq!(
            ParseError::InvalidSignature(SignatureError::Mismatch).status(),
            403
        );
        assert_eq!(ParseError::SecurityOption("msr".into()).status(), 403);
        for err in [
            ParseError::invalid_path("x"),
            ParseError::UnknownOption("x".into()),
            ParseError::ForbiddenOption("x".into()),
            ParseError::invalid_arg("w", "x"),
            ParseError::UnknownPreset("x".into()),
            ParseError::RecursivePreset("x".into()),
            ParseError::Expired { expires: 1, now: 2 },
            ParseError::Unsupported("x".into()),
        ] {
            assert_eq!(err.status(), 404, "{err}");
        }
    }

    #[test]
    fn messages_name_the_option() {
        let err = ParseError::invalid_arg("width", "not a number: `x`");
        assert_eq!(
            err.to_string(),
            "invalid `width` argument: not a number: `x`"
        );
    }
}
