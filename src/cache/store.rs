//! The storage contract: where finished results live.
//!
//! Every backend stores whole objects only (an object is visible complete or not at all),
//! reports whether an error can pass with time, and reads an object back as a stream, so the
//! read path can ask the disk tier and the bucket before calling the upstream.

pub use super::object::{Object, Reading};

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

/// What a store that keeps its own bound holds (the disk tier), for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes counted against the bound (the disk tier counts whole file-system blocks).
    pub bytes: u64,
    pub entries: u64,
    /// Objects removed to make room since the store was opened.
    pub evictions: u64,
}

/// A place that keeps results under their keys.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short description for the first log line (`s3 bucket x at y`, `local directory d`).
    fn describe(&self) -> String;

    /// What the store holds, when it keeps count (a bucket doesn't).
    fn usage(&self) -> Option<Usage> {
        None
    }

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

    /// Opens the object under `key` for reading; `None` when there is none. The body streams:
    /// a caller may serve its first bytes before the last have been read.
    ///
    /// # Errors
    /// The store could not be asked.
    async fn read(&self, key: &str) -> Result<Option<Reading>, StoreError>;

    /// Removes the object under `key`; `true` when there was one.
    ///
    /// # Errors
    /// The store could not be asked; the object may still be there.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
}
