//! How much work the worker takes on: a bounded number of requests in flight (one more is
//! refused with 429 at once, never queued without bound), of which at most
//! `IMGPROXY_CONCURRENCY` run CPU work at the same time; the others wait in line for a slot.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The two limits, shared by every connection.
#[derive(Clone, Debug)]
pub struct Capacity {
    in_flight: Arc<Semaphore>,
    cpu: Arc<Semaphore>,
}

/// A request's place in the worker; dropping it frees the place.
#[derive(Debug)]
pub struct Admitted {
    _place: OwnedSemaphorePermit,
    cpu: Arc<Semaphore>,
}

/// The right to run CPU work; moved into the blocking task so the slot is held until that
/// work has really ended, even if the request gave up on it (timeout, client gone).
#[derive(Debug)]
pub struct CpuSlot {
    _permit: OwnedSemaphorePermit,
}

/// Every place is taken: answer 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests in flight")]
pub struct Full;

impl Capacity {
    /// `max_in_flight` requests at once, `concurrency` of them processing.
    pub fn new(max_in_flight: usize, concurrency: usize) -> Capacity {
        Capacity {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            cpu: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Takes a place without waiting.
    ///
    /// # Errors
    /// [`Full`] when every place is taken.
    pub fn admit(&self) -> Result<Admitted, Full> {
        let place = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full)?;
        Ok(Admitted {
            _place: place,
            cpu: self.cpu.clone(),
        })
    }

    /// CPU slots free right now (for tests and logs).
    pub fn idle_cpu_slots(&self) -> usize {
        self.cpu.available_permits()
    }
}

impl Admitted {
    /// Waits in line for a CPU slot; the caller bounds the wait with the request timeout.
    pub async fn cpu_slot(&self) -> CpuSlot {
        let permit = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .expect("the CPU semaphore is never closed");
        CpuSlot { _permit: permit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_house_refuses_and_frees_on_drop() {
        let capacity = Capacity::new(2, 1);
        let a = capacity.admit().unwrap();
        let b = capacity.admit().unwrap();
        assert_eq!(capacity.admit().unwrap_err(), Full);
        drop(a);
        let _c = capacity.admit().unwrap();
        drop(b);
    }

    // The second request waits for the slot until the first one's CPU work ends.
    #[tokio::test(start_paused = true)]
    async fn cpu_slots_are_held_until_released() {
        let capacity = Capacity::new(10, 1);
        let first = capacity.admit().unwrap();
        let second = capacity.admit().unwrap();
        let slot = first.cpu_slot().await;
        assert_eq!(capacity.idle_cpu_slots(), 0);
        let waiting = tokio::time::timeout(std::time::Duration::from_secs(1), second.cpu_slot());
        assert!(waiting.await.is_err());
        drop(slot);
        let _slot = second.cpu_slot().await;
        assert_eq!(capacity.idle_cpu_slots(), 0);
    }
}
