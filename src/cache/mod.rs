//! Where results go: the key rule, what may be stored, the stores, and the upload queue.

pub mod config;
pub mod fs;
pub mod key;
pub mod policy;
pub mod queue;
pub mod s3;
pub mod store;
pub mod upload;

use std::sync::Arc;

use crate::proxy::config::Config;
use config::StorageConfig;
pub use key::cache_key;
pub use store::{Object, Store};

/// Opens the store the configuration selects: S3 when `S3_BUCKET` is set, else `CACHE_DIR`.
///
/// # Errors
/// The local directory cannot be created.
pub async fn open_store(config: &Config) -> std::io::Result<Arc<dyn Store>> {
    Ok(match &config.storage {
        StorageConfig::Local { dir } => Arc::new(fs::FsStore::open(dir)?),
        StorageConfig::S3(s3) => {
            Arc::new(s3::S3Store::from_config(s3, config.upload.timeout).await)
        }
    })
}
