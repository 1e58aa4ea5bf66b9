//! Whether a stored result may be served as it is: a pure function of its metadata and `now`.
//!
//! A result is fresh for its stored `s-maxage` or `max-age` (imgproxy's `IMGPROXY_TTL`, a year
//! by default), counted from when it was rendered — the time every tier keeps — not from when
//! a tier got its copy. A result stored without either (put in the bucket by someone else) is
//! fresh for good: nothing says otherwise, and the bucket serves it to browsers anyway.

use std::time::{Duration, SystemTime};

use super::object::Meta;
use super::policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Past its lifetime: served while one background render replaces it.
    Stale,
}

pub fn freshness(meta: &Meta, now: SystemTime) -> Freshness {
    let Some(cache_control) = meta.cache_control.as_deref() else {
        return Freshness::Fresh;
    };
    let Some(lifetime) = policy::max_age(|| cache_control.split(',').map(str::trim)) else {
        return Freshness::Fresh;
    };
    let age = now
        .duration_since(meta.stored_time())
        .unwrap_or(Duration::ZERO);
    if age < lifetime {
        Freshness::Fresh
    } else {
        Freshness::Stale
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const STORED: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn meta(cache_control: Option<&str>) -> Meta {
        Meta {
            content_type: "image/webp".into(),
            cache_control: cache_control.map(str::to_owned),
            stored_at: STORED,
            content_disposition: None,
        }
    }

    #[test]
    fn fresh_for_max_age_from_the_render() {
        let m = meta(Some("max-age=3600, public"));
        assert_eq!(freshness(&m, at(STORED)), Freshness::Fresh);
        assert_eq!(freshness(&m, at(STORED + 3599)), Freshness::Fresh);
        assert_eq!(freshness(&m, at(STORED + 3600)), Freshness::Stale);
    }

    #[test]
    fn s_maxage_wins_for_a_shared_cache() {
        let m = meta(Some("max-age=60, s-maxage=7200"));
        assert_eq!(freshness(&m, at(STORED + 3600)), Freshness::Fresh);
        assert_eq!(freshness(&m, at(STORED + 7200)), Freshness::Stale);
    }

    #[test]
    fn no_lifetime_is_fresh_and_a_clock_gone_back_too() {
        assert_eq!(
            freshness(&meta(None), at(STORED + 10_000_000_000)),
            Freshness::Fresh
        );
        assert_eq!(
            freshness(&meta(Some("public")), at(u64::MAX / 4)),
            Freshness::Fresh
        );
        let m = meta(Some("max-age=10"));
        assert_eq!(freshness(&m, at(STORED - 100)), Freshness::Fresh);
    }

    #[test]
    fn an_unreadable_max_age_is_stale_at_once() {
        let m = meta(Some("max-age=soon"));
        assert_eq!(freshness(&m, at(STORED)), Freshness::Stale);
    }
}
