//! The processing engine: turns source bytes and `ProcessingOptions` into the result.
pub mod ops;
