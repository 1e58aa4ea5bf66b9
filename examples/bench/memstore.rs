//! The benchmark's S3 storage: s3s (the S3 protocol, SigV4 and payload-hash checks) over a map
//! in memory.
//!
//! In production the bucket is another machine's work; here it shares the 2 measured cores.
//! s3s-fs spent about a millisecond of CPU per 50 KB PUT (temp file, rename, metadata file, MD5
//! ETag, each file call a blocking-pool hop), more than the proxy's whole request, so it measured
//! the stand-in rather than the proxy. This keeps everything a client can observe — signatures
//! checked, bodies verified against their signed SHA-256 before they count, `If-None-Match: *`
//! answered 412, GETs of missing keys answered `NoSuchKey` — and drops only the disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use s3s::dto::{
    GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput, PutObjectInput,
    PutObjectOutput, StreamingBlob,
};
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

/// Larger bodies are refused: the bench sends at most 1 MB.
const MAX_OBJECT_BYTES: usize = 8 * 1024 * 1024;

struct Stored {
    body: Bytes,
    content_type: Option<String>,
    cache_control: Option<String>,
    metadata: Option<s3s::dto::Metadata>,
}

/// Objects by "bucket/key", bodies included (a lookup reads them back). The bench clears it
/// after every proxy it measures, so it holds at most one run's results.
#[derive(Clone, Default)]
pub struct MemStore {
    objects: Arc<Mutex<HashMap<String, Stored>>>,
}

impl MemStore {
    pub fn clear(&self) {
        self.objects.lock().expect("not poisoned").clear();
    }

    /// The objects of `bucket`: (key, body), in no order.
    #[allow(dead_code, reason = "the soak's; the benchmark does not use it")]
    pub fn objects(&self, bucket: &str) -> Vec<(String, Bytes)> {
        let prefix = format!("{bucket}/");
        let objects = self.objects.lock().expect("not poisoned");
        objects
            .iter()
            .filter_map(|(name, stored)| {
                let key = name.strip_prefix(&prefix)?;
                Some((key.to_owned(), stored.body.clone()))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl S3 for MemStore {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let name = format!("{}/{}", input.bucket, input.key);
        let Some(body) = input.body else {
            return Err(s3_error!(IncompleteBody));
        };
        let exists = |store: &HashMap<String, Stored>| store.contains_key(&name);
        let if_absent = input.if_none_match.as_ref().is_some_and(|c| c.is_any());
        if if_absent && exists(&self.objects.lock().expect("not poisoned")) {
            return Err(s3_error!(PreconditionFailed, "Object already exists"));
        }
        // Reading the body to its end is what makes s3s check it against the signed hash.
        let body: Bytes = s3s::Body::from(body)
            .store_all_limited(MAX_OBJECT_BYTES)
            .await
            .map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
        let mut objects = self.objects.lock().expect("not poisoned");
        if if_absent && exists(&objects) {
            return Err(s3_error!(PreconditionFailed, "Object already exists"));
        }
        let stored = Stored {
            body,
            content_type: input.content_type,
            cache_control: input.cache_control,
            metadata: input.metadata,
        };
        objects.insert(name, stored);
        Ok(S3Response::new(PutObjectOutput::default()))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let name = format!("{}/{}", req.input.bucket, req.input.key);
        let objects = self.objects.lock().expect("not poisoned");
        let Some(stored) = objects.get(&name) else {
            return Err(s3_error!(NoSuchKey));
        };
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(stored.body.len() as i64),
            content_type: stored.content_type.clone(),
            cache_control: stored.cache_control.clone(),
            metadata: stored.metadata.clone(),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let name = format!("{}/{}", req.input.bucket, req.input.key);
        let objects = self.objects.lock().expect("not poisoned");
        let Some(stored) = objects.get(&name) else {
            return Err(s3_error!(NoSuchKey));
        };
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::from(s3s::Body::from(stored.body.clone()))),
            content_length: Some(stored.body.len() as i64),
            content_type: stored.content_type.clone(),
            cache_control: stored.cache_control.clone(),
            metadata: stored.metadata.clone(),
            ..Default::default()
        }))
    }
}
