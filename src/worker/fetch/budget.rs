//! The bytes every downloaded source holds together (`IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT`),
//! as a semaphore of byte permits. Downloads happen before a request takes a CPU slot, so
//! without it `IMGPROXY_MAX_CLIENTS` downloads of `IMGPROXY_MAX_SRC_FILE_SIZE` each could be
//! held at once.
//!
//! - A source with a `Content-Length` reserves it whole before its first byte is read: one
//!   atomic acquisition, so two declared downloads can never each hold half the budget while
//!   waiting for the other's half (the semaphore is fair: first come, first served).
//! - A source without one reserves as its buffer grows (by the buffer's capacity, which is
//!   what is really allocated). Two such downloads can hold-and-wait; the download timeout
//!   ends that.
//! - The permits live in the downloaded [`Bytes`] (`Bytes::from_owner`), so they are returned
//!   when the last copy of the source is dropped: after processing, or after the response
//!   body for `raw` pass-through — whenever its memory really is freed.
//!
//! A source bigger than the whole budget can never fit and is refused at once
//! ([`FetchError::OverBudget`]); waiting for room counts against `IMGPROXY_DOWNLOAD_TIMEOUT`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::FetchError;

/// A shared budget of source bytes; cheap to clone.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    total: u64,
}

/// A source being downloaded: its bytes so far and the permits its buffer holds.
#[derive(Debug)]
pub struct SourceBuffer {
    buf: Vec<u8>,
    /// `IMGPROXY_MAX_SRC_FILE_SIZE`.
    limit: u64,
    /// The `Content-Length`, reserved up front: the buffer grows up to it without taking
    /// more permits.
    declared: Option<u64>,
    budget: ByteBudget,
    /// Permits for `buf`'s capacity (or the declared length, when that was reserved).
    held: Option<OwnedSemaphorePermit>,
}

/// The source's bytes and their permits, kept together until the bytes are dropped.
struct Held {
    buf: Vec<u8>,
    _permits: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl ByteBudget {
    /// A budget of `total` bytes (at least 1; tokio's semaphore caps it near 2^61).
    pub fn new(total: u64) -> ByteBudget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS as u64);
        ByteBudget {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Bytes held by sources right now (for tests and logs).
    pub fn held(&self) -> u64 {
        self.total - self.permits.available_permits() as u64
    }

    /// Starts a download of at most `limit` bytes; with `declared` (its `Content-Length`) the
    /// whole length is reserved now, waiting for room.
    ///
    /// # Errors
    /// [`FetchError::TooBig`] past `limit`, [`FetchError::OverBudget`] when it could never fit.
    pub async fn start(
        &self,
        declared: Option<u64>,
        limit: u64,
    ) -> Result<SourceBuffer, FetchError> {
        let mut buffer = SourceBuffer {
            buf: Vec::new(),
            limit,
            declared,
            budget: self.clone(),
            held: None,
        };
        if let Some(len) = declared {
            if len > limit {
                return Err(FetchError::TooBig(limit));
            }
            buffer.reserve_permits(len).await?;
        }
        Ok(buffer)
    }

    /// Accounts for a source read whole by other means (`local://` files, whose size is
    /// known and bounded before reading): waits for room, then ties the permits to `bytes`.
    ///
    /// # Errors
    /// [`FetchError::OverBudget`] when it could never fit.
    pub async fn hold(&self, bytes: Bytes) -> Result<Bytes, FetchError> {
        let mut buffer = self.start(None, u64::MAX).await?;
        buffer.reserve_permits(bytes.len() as u64).await?;
        Ok(Bytes::from_owner(HeldBytes {
            bytes,
            _permits: buffer.held,
        }))
    }

    async fn acquire(&self, bytes: u64) -> Result<OwnedSemaphorePermit, FetchError> {
        if bytes > self.total {
            return Err(FetchError::OverBudget(self.total));
        }
        let n = u32::try_from(bytes).map_err(|_| FetchError::OverBudget(self.total))?;
        Ok(self
            .permits
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the byte budget's semaphore is never closed"))
    }
}

/// Bytes already read elsewhere, with their permits.
struct HeldBytes {
    bytes: Bytes,
    _permits: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for HeldBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl SourceBuffer {
    fn held_permits(&self) -> u64 {
        self.held.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    /// Holds permits for at least `bytes` in total.
    async fn reserve_permits(&mut self, bytes: u64) -> Result<(), FetchError> {
        let have = self.held_permits();
        if bytes <= have {
            return Ok(());
        }
        // More than the whole budget can never be granted: waiting would be forever.
        if bytes > self.budget.total {
            return Err(FetchError::OverBudget(self.budget.total));
        }
        let more = self.budget.acquire(bytes - have).await?;
        match &mut self.held {
            Some(held) => held.merge(more),
            None => self.held = Some(more),
        }
        Ok(())
    }

    /// Appends `chunk`, first growing the reservation to the buffer's new capacity.
    ///
    /// # Errors
    /// [`FetchError::TooBig`] past `IMGPROXY_MAX_SRC_FILE_SIZE`, [`FetchError::OverBudget`]
    /// past the whole budget. The caller drops the stream, which closes the connection.
    pub async fn append(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        let needed = self.buf.len() as u64 + chunk.len() as u64;
        if needed > self.limit {
            return Err(FetchError::TooBig(self.limit));
        }
        if needed > self.buf.capacity() as u64 {
            // Doubling, as Vec would, but never past the declared length (while the body
            // keeps to it), the limit or the budget; the permits cover exactly what is
            // allocated.
            let ceiling = self
                .declared
                .filter(|declared| needed <= *declared)
                .unwrap_or(self.limit)
                .min(self.budget.total);
            let capacity = needed
                .max(self.buf.capacity() as u64 * 2)
                .max(64 * 1024)
                .min(ceiling.max(needed));
            self.reserve_permits(capacity).await?;
            self.buf
                .reserve_exact((capacity - self.buf.len() as u64) as usize);
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The downloaded bytes, holding their permits until the last copy is dropped; what the
    /// reservation held beyond the bytes' length is returned now.
    pub fn into_bytes(mut self) -> Bytes {
        self.buf.shrink_to_fit();
        let keep = self.buf.capacity() as u64;
        if let Some(held) = &mut self.held
            && held.num_permits() as u64 > keep
        {
            let excess = held.num_permits() - keep as usize;
            drop(held.split(excess));
        }
        Bytes::from_owner(Held {
            buf: self.buf,
            _permits: self.held,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_follow_the_bytes() {
        let budget = ByteBudget::new(1000);
        let mut a = budget.start(Some(300), 10_000).await.unwrap();
        assert_eq!(budget.held(), 300);
        a.append(&[1; 200]).await.unwrap();
        let bytes = a.into_bytes();
        assert_eq!(bytes.len(), 200);
        assert_eq!(budget.held(), 200, "the unused reservation is returned");
        let copy = bytes.clone();
        drop(bytes);
        assert_eq!(budget.held(), 200, "a copy still holds them");
        drop(copy);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn limits_refuse_at_once() {
        let budget = ByteBudget::new(1000);
        assert!(matches!(
            budget.start(Some(2000), 10_000).await,
            Err(FetchError::OverBudget(1000))
        ));
        assert!(matches!(
            budget.start(Some(200), 100).await,
            Err(FetchError::TooBig(100))
        ));
        let mut chunked = budget.start(None, 10_000).await.unwrap();
        chunked.append(&[0; 900]).await.unwrap();
        assert!(matches!(
            chunked.append(&[0; 200]).await,
            Err(FetchError::OverBudget(1000))
        ));
        drop(chunked);
        assert_eq!(budget.held(), 0);
    }

    // A second download waits until the first one's bytes are dropped.
    #[tokio::test(start_paused = true)]
    async fn a_full_budget_makes_downloads_wait() {
        let budget = ByteBudget::new(1000);
        let first = budget.start(Some(800), 10_000).await.unwrap();
        let second = budget.start(Some(800), 10_000);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(1), &mut second)
                .await
                .is_err()
        );
        drop(first);
        let _second = second.await.unwrap();
        assert_eq!(budget.held(), 800);
    }
}
