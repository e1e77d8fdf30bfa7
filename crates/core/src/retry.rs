//! The retry policy: a pure function of (attempts made, outcome, now, a jitter sample).
//!
//! The dispatcher classifies what happened into a [`DeliveryOutcome`]; [`RetryPolicy::next_step`]
//! decides what happens next. Keeping the decision pure lets tests cover schedules that span days.

use std::time::Duration;

/// What one HTTP attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx answer.
    Delivered { status: u16 },
    /// `410 Gone`: the customer says the endpoint no longer exists.
    Gone,
    /// Any other answer (3xx are not followed and count as failures).
    Rejected { status: u16, retry_after: Option<Duration> },
    /// No answer within the request timeout.
    Timeout,
    /// The connection failed (DNS, refused, TLS, reset).
    ConnectionFailed,
    /// The URL is not allowed (a private or loopback address when those are refused).
    Blocked,
}

impl DeliveryOutcome {
    /// A short, stable label for logs, metrics and the attempt log.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Gone => "gone",
            Self::Rejected { .. } => "rejected",
            Self::Timeout => "timeout",
            Self::ConnectionFailed => "connection_failed",
            Self::Blocked => "blocked",
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Delivered: nothing more to do.
    Done,
    /// Try again at this Unix millisecond.
    RetryAt(i64),
    /// The schedule is exhausted: the delivery has failed for good (it can still be replayed).
    GiveUp,
    /// The endpoint is gone: disable it and stop.
    DisableEndpoint,
}

/// An exponential schedule with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The wait before retry `n` (1-based) is `schedule[n - 1]`; after the last one, give up.
    pub schedule: Vec<Duration>,
    /// Each wait is spread by ± this fraction, so that retries of one outage do not arrive together.
    pub jitter: f64,
    /// `Retry-After` is honoured up to this long.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts over about three days: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    /// 14 h, 20 h and 24 h.
    fn default() -> Self {
        Self::from_secs(&[5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400])
    }
}

impl RetryPolicy {
    /// A policy with these waits (in seconds) before each retry, ±20 % jitter and `Retry-After`
    /// honoured up to an hour.
    pub fn from_secs(waits: &[u64]) -> Self {
        Self {
            schedule: waits.iter().copied().map(Duration::from_secs).collect(),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(3600),
        }
    }

    /// The most attempts a delivery gets, the first included.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len()).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// Decides what follows attempt number `attempts_made` (1 for the first attempt).
    ///
    /// `jitter_sample` is a uniform sample in `[0, 1)`; the caller draws it so that this stays pure.
    pub fn next_step(
        &self,
        attempts_made: u32,
        outcome: &DeliveryOutcome,
        now_ms: i64,
        jitter_sample: f64,
    ) -> NextStep {
        match outcome {
            DeliveryOutcome::Delivered { .. } => return NextStep::Done,
            DeliveryOutcome::Gone => return NextStep::DisableEndpoint,
            _ => {}
        }
        let index = usize::try_from(attempts_made.saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(base) = self.schedule.get(index) else {
            return NextStep::GiveUp;
        };
        let wait = match outcome {
            DeliveryOutcome::Rejected {
                retry_after: Some(after),
                ..
            } => (*after).clamp(Duration::from_secs(1), self.max_retry_after),
            _ => {
                let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * jitter_sample.clamp(0.0, 1.0) - 1.0);
                base.mul_f64(1.0 + spread)
            }
        };
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        NextStep::RetryAt(now_ms.saturating_add(wait_ms.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000;

    fn failed() -> DeliveryOutcome {
        DeliveryOutcome::Rejected {
            status: 503,
            retry_after: None,
        }
    }

    #[test]
    fn delivered_is_done_and_gone_disables() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.next_step(1, &DeliveryOutcome::Delivered { status: 204 }, NOW, 0.5),
            NextStep::Done
        );
        assert_eq!(
            p.next_step(3, &DeliveryOutcome::Gone, NOW, 0.5),
            NextStep::DisableEndpoint
        );
    }

    #[test]
    fn first_retry_comes_after_five_seconds_without_jitter_at_the_midpoint() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_step(1, &failed(), NOW, 0.5), NextStep::RetryAt(NOW + 5_000));
        assert_eq!(
            p.next_step(1, &DeliveryOutcome::Timeout, NOW, 0.0),
            NextStep::RetryAt(NOW + 4_000)
        );
    }

    #[test]
    fn retries_503_honouring_retry_after_within_bounds() {
        let p = RetryPolicy::default();
        let after = |s| DeliveryOutcome::Rejected {
            status: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(p.next_step(1, &after(120), NOW, 0.9), NextStep::RetryAt(NOW + 120_000));
        assert_eq!(
            p.next_step(1, &after(86_400), NOW, 0.9),
            NextStep::RetryAt(NOW + 3_600_000)
        );
    }

    #[test]
    fn gives_up_after_about_three_days() {
        let p = RetryPolicy::default();
        let total: Duration = p.schedule.iter().sum();
        assert!(
            total > Duration::from_secs(60 * 3600) && total < Duration::from_secs(84 * 3600),
            "{total:?}"
        );
        assert_eq!(p.next_step(p.max_attempts(), &failed(), NOW, 0.5), NextStep::GiveUp);
        assert!(matches!(
            p.next_step(p.max_attempts() - 1, &failed(), NOW, 0.5),
            NextStep::RetryAt(_)
        ));
    }

    proptest! {
        #[test]
        fn every_retry_is_in_the_future_and_within_the_jitter_band(attempt in 1u32..10, sample in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let base = p.schedule[(attempt - 1) as usize].as_millis() as f64;
            match p.next_step(attempt, &DeliveryOutcome::ConnectionFailed, NOW, sample) {
                NextStep::RetryAt(at) => {
                    let wait = (at - NOW) as f64;
                    prop_assert!(wait >= base * 0.8 - 1.0 && wait <= base * 1.2 + 1.0);
                    prop_assert!(at > NOW);
                }
                other => prop_assert!(false, "expected a retry, got {other:?}"),
            }
        }

        #[test]
        fn retry_after_is_honoured_within_bounds(attempt in 1u32..10, secs in 0u64..1_000_000, sample in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let outcome = DeliveryOutcome::Rejected { status: 429, retry_after: Some(Duration::from_secs(secs)) };
            match p.next_step(attempt, &outcome, NOW, sample) {
                NextStep::RetryAt(at) => prop_assert_eq!(at - NOW, secs.clamp(1, 3600) as i64 * 1000),
                other => prop_assert!(false, "expected a retry, got {other:?}"),
            }
        }

        #[test]
        fn success_is_final_and_the_schedule_ends(attempt in 1u32..100, status in 200u16..300, sample in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            prop_assert_eq!(p.next_step(attempt, &DeliveryOutcome::Delivered { status }, NOW, sample), NextStep::Done);
            if attempt >= p.max_attempts() {
                prop_assert_eq!(p.next_step(attempt, &DeliveryOutcome::Timeout, NOW, sample), NextStep::GiveUp);
            }
        }
    }
}
