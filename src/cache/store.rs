//! The storage contract: where finished results live.
//!
//! Every backend stores whole objects only (an object is visible complete or not at all),
//! reports whether an error can pass with time, and can read an object back, so read-through
//! lookups (memory → local disk → S3 before calling the upstream) can stack stores later.

use bytes::Bytes;

/// A finished response, ready to be stored and served straight from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub body: Bytes,
    /// Copied from the upstream response; never empty (see `policy`).
    pub content_type: String,
    pub cache_control: Option<String>,
}

/// How a PUT treats an object that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    Overwrite,
    /// `If-None-Match: *`: the store refuses to replace an existing object.
    IfAbsent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// Only with [`PutMode::IfAbsent`]: the object was already there.
    AlreadyExists,
}

/// Whether retrying a failed call can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 5xx, throttling, timeouts, connection trouble.
    Transient,
    /// Wrong credentials, missing bucket, refused request: retrying only adds load.
    Permanent,
}

/// A failed store call with enough context for one useful log line.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
    /// What an operator should check, for errors that need a human.
    pub hint: Option<&'static str>,
}

impl StoreError {
    pub fn transient(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: ErrorKind::Transient,
            message: message.into(),
            hint: None,
        }
    }

    pub fn permanent(message: impl Into<String>, hint: Option<&'static str>) -> StoreError {
        StoreError {
            kind: ErrorKind::Permanent,
            message: message.into(),
            hint,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// A place that keeps results under their keys.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short description for the first log line (`s3 bucket x at y`, `local directory d`).
    fn describe(&self) -> String;

    /// # Errors
    /// The store could not be asked.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;

    /// Stores `object` whole under `key`.
    ///
    /// # Errors
    /// Nothing was stored; [`StoreError::kind`] says whether to try again.
    async fn put(
        &self,
        key: &str,
        object: &Object,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError>;

    /// Reads an object back; `None` when there is none.
    ///
    /// # Errors
    /// The store could not be asked.
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError>;
}
