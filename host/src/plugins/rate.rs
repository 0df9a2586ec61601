//! Request rate limits: a token bucket per connection with a `rate_limit`, shared by every
//! worker of the process (a host and its siblings), applied to each outgoing HTTP request of
//! the connection's connector (see `outbound.rs`).
//!
//! A request takes a token; the bucket holds at most `burst` and refills at the rate. A
//! request that finds none *reserves* the next one (the count goes below zero) and waits until
//! it is due, so waiting requests go in the order they asked, with no polling. Over any span
//! of `t` seconds at most `burst + rate × t` requests go out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, RateLimit};

/// One connection's bucket.
#[derive(Debug)]
pub struct Bucket {
    per_second: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens at `at` (negative: reserved ahead).
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket for `limit`.
    pub fn new(limit: &RateLimit) -> Bucket {
        let burst = f64::from(limit.burst.max(1));
        Bucket {
            per_second: limit.per_second().max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new(State { tokens: burst, at: Instant::now() }),
        }
    }

    /// Takes a token at `now`: how long the request must wait for it (zero: go now).
    pub fn take(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.per_second).min(self.burst);
        state.at = state.at.max(now);
        state.tokens -= 1.0;
        if state.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-state.tokens / self.per_second) }
    }
}

/// The buckets of a config's rate-limited connections, by connection.
#[derive(Debug, Default)]
pub struct Rates {
    buckets: BTreeMap<String, Arc<Bucket>>,
}

impl Rates {
    /// A full bucket per connection with a `rate_limit`.
    pub fn new(config: &Config) -> Rates {
        let buckets = config
            .connections
            .values()
            .filter_map(|c| Some((c.name.clone(), Arc::new(Bucket::new(c.rate_limit.as_ref()?)))))
            .collect();
        Rates { buckets }
    }

    /// The bucket of `connection`, if it is rate-limited.
    pub fn of(&self, connection: &str) -> Option<Arc<Bucket>> {
        self.buckets.get(connection).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_spaces_requests_at_the_rate() {
        let bucket = Bucket::new(&RateLimit { requests: 10, per: Duration::from_secs(1), burst: 3 });
        let start = Instant::now();
        let waits: Vec<Duration> = (0..6).map(|_| bucket.take(start)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3], "the burst goes at once");
        let ms: Vec<u128> = waits[3..].iter().map(|w| w.as_millis()).collect();
        assert!(ms.iter().zip([100, 200, 300]).all(|(got, want)| got.abs_diff(want) <= 1), "{ms:?}");
        // A quiet second refills the bucket, never beyond the burst.
        let later = start + Duration::from_secs(10);
        assert_eq!(bucket.take(later), Duration::ZERO);
        assert_eq!(bucket.take(later), Duration::ZERO);
        assert_eq!(bucket.take(later), Duration::ZERO);
        assert!(bucket.take(later) > Duration::ZERO);
    }
}
