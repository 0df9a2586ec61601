//! Fulfilment policy in the config: retry policies of connections, thresholds of resource
//! types.

use std::time::Duration;

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use serde::Deserialize;

use super::{Source, SourceError, duration};
use crate::model::ChangeKind;

/// How delays between attempts grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// Doubling from `delay` up to `max_delay`.
    Exponential,
}

/// What a connection does with an order whose connector reported a transient error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included; after the last, the order waits for an
    /// operator.
    pub max_attempts: u32,
    /// How delays grow.
    pub backoff: Backoff,
    /// The first (or every, for fixed) delay.
    pub delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Whether a random part (up to the delay itself) is added, so that many orders failing
    /// together do not retry together.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt of an order that has made `attempts` attempts, or
    /// none when that was the last one.
    pub fn delay_after(&self, attempts: u32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let step = attempts.saturating_sub(1) as usize;
        // Jitter adds up to one more delay on top; `max_delay` stays the most an order waits
        // (a fixed delay set above it is taken as meant).
        let most = self.max_delay.max(self.delay);
        let delay = match self.backoff {
            Backoff::Fixed => {
                let builder = ConstantBuilder::default().with_delay(self.delay).without_max_times();
                let builder = if self.jitter { builder.with_jitter() } else { builder };
                builder.build().nth(step)
            }
            Backoff::Exponential => {
                let builder = ExponentialBuilder::default()
                    .with_min_delay(self.delay)
                    .with_max_delay(self.max_delay)
                    .without_max_times();
                let builder = if self.jitter { builder.with_jitter() } else { builder };
                builder.build().nth(step)
            }
        };
        delay.map(|d| d.min(most))
    }
}

/// One change kind's limits; 0 switches a limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limit {
    /// Most orders of the kind in one run.
    pub absolute: u64,
    /// Most orders of the kind in one run, as a percentage of the type's existing resources.
    pub percent: f64,
}

/// Known resources a type needs before its percent limits apply, unless the config says.
pub const DEFAULT_MIN_KNOWN: u64 = 100;

/// Per resource type: how many orders of each change kind one run may create before the run
/// holds them for an operator. The lowest limit that applies wins.
///
/// A percentage needs a size to be a percentage of: percent limits apply only when the type's
/// resources are known (its connection can read) and there are at least `min_known` of them.
/// Below that, 10% of a handful would hold every small change (and of none, every first run);
/// absolute limits always apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Limits for `added` orders.
    pub added: Limit,
    /// Limits for `modified` orders.
    pub modified: Limit,
    /// Limits for `deleted` orders.
    pub deleted: Limit,
    /// Known resources the type needs before its percent limits apply.
    pub min_known: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            added: Limit::default(),
            modified: Limit::default(),
            deleted: Limit::default(),
            min_known: DEFAULT_MIN_KNOWN,
        }
    }
}

impl Thresholds {
    /// The limits of a change kind.
    pub fn of(&self, kind: ChangeKind) -> Limit {
        match kind {
            ChangeKind::Added => self.added,
            ChangeKind::Modified => self.modified,
            ChangeKind::Deleted => self.deleted,
        }
    }

    /// Whether percent limits apply to a type with `known` resources (none: its connection
    /// cannot read, so their number is unknown).
    pub fn percent_applies(&self, known: Option<u64>) -> bool {
        known.is_some_and(|known| known >= self.min_known)
    }

    /// The effective limit for a change kind given the type's known resources, or none when
    /// no limit of it applies.
    pub fn limit(&self, kind: ChangeKind, known: Option<u64>) -> Option<u64> {
        let limit = self.of(kind);
        let absolute = (limit.absolute > 0).then_some(limit.absolute);
        // Rounded down: 10% of 15 resources allows 1 order, not 2.
        let percent = (limit.percent > 0.0 && self.percent_applies(known))
            .then(|| (known.unwrap_or_default() as f64 * limit.percent / 100.0).floor() as u64);
        match (absolute, percent) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        }
    }

    /// Whether any limit is on.
    pub fn any(&self) -> bool {
        [self.added, self.modified, self.deleted].iter().any(|l| l.absolute > 0 || l.percent > 0.0)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
    delay: Option<String>,
    max_delay: Option<String>,
    jitter: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThresholds {
    #[serde(default)]
    added: u64,
    #[serde(default)]
    added_percent: f64,
    #[serde(default)]
    modified: u64,
    #[serde(default)]
    modified_percent: f64,
    #[serde(default)]
    deleted: u64,
    #[serde(default)]
    deleted_percent: f64,
    min_known: Option<u64>,
}

pub(super) fn retry(source: &Source, key: &str, raw: Option<RawRetry>) -> Result<RetryPolicy, SourceError> {
    let defaults = RetryPolicy::default();
    let Some(raw) = raw else { return Ok(defaults) };
    let policy = RetryPolicy {
        max_attempts: raw.max_attempts.unwrap_or(defaults.max_attempts),
        backoff: raw.backoff.unwrap_or(defaults.backoff),
        delay: duration(source, &format!("{key}.delay"), raw.delay.as_deref())?.unwrap_or(defaults.delay),
        max_delay: duration(source, &format!("{key}.max_delay"), raw.max_delay.as_deref())?
            .unwrap_or(defaults.max_delay),
        jitter: raw.jitter.unwrap_or(defaults.jitter),
    };
    if policy.max_attempts == 0 {
        return Err(source.error(format!("{key}.max_attempts"), "must be at least 1 (the first attempt)"));
    }
    if policy.max_delay < policy.delay {
        return Err(source.error(format!("{key}.max_delay"), "must not be shorter than `delay`"));
    }
    Ok(policy)
}

pub(super) fn thresholds(source: &Source, key: &str, raw: Option<RawThresholds>) -> Result<Thresholds, SourceError> {
    let Some(raw) = raw else { return Ok(Thresholds::default()) };
    for (name, percent) in [
        ("added_percent", raw.added_percent),
        ("modified_percent", raw.modified_percent),
        ("deleted_percent", raw.deleted_percent),
    ] {
        if !(0.0..=100.0).contains(&percent) {
            return Err(source.error(format!("{key}.{name}"), "must be a percentage from 0 (off) to 100"));
        }
    }
    Ok(Thresholds {
        added: Limit { absolute: raw.added, percent: raw.added_percent },
        modified: Limit { absolute: raw.modified, percent: raw.modified_percent },
        deleted: Limit { absolute: raw.deleted, percent: raw.deleted_percent },
        min_known: raw.min_known.unwrap_or(DEFAULT_MIN_KNOWN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_limit_that_is_on_wins() {
        let t = Thresholds {
            added: Limit { absolute: 100, percent: 10.0 },
            modified: Limit { absolute: 0, percent: 50.0 },
            deleted: Limit { absolute: 3, percent: 0.0 },
            min_known: 10,
        };
        assert_eq!(t.limit(ChangeKind::Added, Some(500)), Some(50));
        assert_eq!(t.limit(ChangeKind::Added, Some(5000)), Some(100));
        assert_eq!(t.limit(ChangeKind::Modified, Some(15)), Some(7));
        assert_eq!(t.limit(ChangeKind::Deleted, Some(1_000_000)), Some(3));
        assert_eq!(Thresholds::default().limit(ChangeKind::Added, Some(10)), None);
        assert!(!Thresholds::default().any());
    }

    #[test]
    fn percent_limits_wait_for_min_known_resources_and_absolute_ones_do_not() {
        let t = Thresholds {
            added: Limit { absolute: 0, percent: 10.0 },
            deleted: Limit { absolute: 5, percent: 10.0 },
            ..Thresholds::default()
        };
        assert_eq!(t.min_known, DEFAULT_MIN_KNOWN);
        assert_eq!(t.limit(ChangeKind::Added, Some(0)), None, "a percentage of nothing is no limit");
        assert_eq!(t.limit(ChangeKind::Added, Some(99)), None);
        assert_eq!(t.limit(ChangeKind::Added, Some(100)), Some(10));
        assert_eq!(t.limit(ChangeKind::Added, None), None, "unknown size: no percent limit");
        assert_eq!(t.limit(ChangeKind::Deleted, None), Some(5));
        assert_eq!(t.limit(ChangeKind::Deleted, Some(3)), Some(5));
        let always = Thresholds { min_known: 0, ..t };
        assert_eq!(always.limit(ChangeKind::Added, Some(0)), Some(0), "min_known = 0 applies percentages always");
        assert_eq!(always.limit(ChangeKind::Added, None), None, "but never to an unknown size");
    }

    #[test]
    fn retries_follow_the_policy_and_stop() {
        let fixed = RetryPolicy { max_attempts: 3, backoff: Backoff::Fixed, jitter: false, ..RetryPolicy::default() };
        assert_eq!(fixed.delay_after(1), Some(Duration::from_secs(30)));
        assert_eq!(fixed.delay_after(2), Some(Duration::from_secs(30)));
        assert_eq!(fixed.delay_after(3), None);
        let exp = RetryPolicy {
            max_attempts: 10,
            jitter: false,
            max_delay: Duration::from_secs(100),
            ..RetryPolicy::default()
        };
        let delays: Vec<u64> = (1..=5).map(|a| exp.delay_after(a).unwrap().as_secs()).collect();
        assert_eq!(delays, [30, 60, 100, 100, 100]);
        let jittered = RetryPolicy { jitter: true, ..exp };
        let d = jittered.delay_after(2).unwrap();
        assert!(d >= Duration::from_secs(60) && d < Duration::from_secs(120), "{d:?}");
        // At the cap, jitter never takes an order past max_delay.
        for attempts in 3..10 {
            assert_eq!(jittered.delay_after(attempts), Some(Duration::from_secs(100)), "attempt {attempts}");
        }
        let long_fixed = RetryPolicy { backoff: Backoff::Fixed, delay: Duration::from_secs(7200), ..fixed };
        assert_eq!(long_fixed.delay_after(1), Some(Duration::from_secs(7200)));
    }
}
