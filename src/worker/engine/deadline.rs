//! When a job stops being worth finishing. The HTTP layer stops waiting at `IMGPROXY_TIMEOUT`,
//! but the job runs on a blocking thread that nothing can kill, and it keeps its CPU slot
//! until it ends (a freed slot would let more jobs run than there are cores). So the job
//! abandons itself: the pipeline checks its [`Deadline`] between stages (after decoding,
//! before each frame, before encoding) and stops with [`EngineError::TimedOut`]. A single
//! stage can't be interrupted; the limits bound those instead (resolution, result size,
//! `IMGPROXY_MAX_JPEG_SCANS`, `IMGPROXY_MAX_SVG_FILTER_MEGAPIXELS`).

use std::time::Instant;

use super::EngineError;

/// The instant past which a job's result has no one waiting for it; `None` = never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: the job runs to the end (tests, start-up checks).
    pub const NONE: Deadline = Deadline(None);

    /// A deadline at `at`.
    pub fn at(at: Instant) -> Deadline {
        Deadline(Some(at))
    }

    /// Whether the job may start `stage`.
    ///
    /// # Errors
    /// [`EngineError::TimedOut`] once the deadline has passed.
    pub fn check(self, stage: &'static str) -> Result<(), EngineError> {
        match self.0 {
            Some(at) if Instant::now() >= at => Err(EngineError::TimedOut { stage }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn passes_until_the_instant_then_stops() {
        assert!(Deadline::NONE.check("decode").is_ok());
        let later = Deadline::at(Instant::now() + Duration::from_secs(3600));
        assert!(later.check("decode").is_ok());
        let past = Deadline::at(Instant::now());
        assert!(matches!(
            past.check("encode"),
            Err(EngineError::TimedOut { stage: "encode" })
        ));
    }
}
