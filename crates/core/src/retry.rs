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
    /// 15 attempts over about three days: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, then
    /// every 12 h.
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(n * 60);
        let h = |n: u64| Duration::from_secs(n * 3600);
        Self {
            schedule: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                m(2),
                m(10),
                m(30),
                h(1),
                h(2),
                h(4),
                h(8),
                h(12),
                h(12),
                h(12),
                h(12),
                h(12),
            ],
            jitter: 0.2,
            max_retry_after: h(1),
        }
    }
}

impl RetryPolicy {
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
        assert!(total > Duration::from_secs(60 * 3600) && total < Duration::from_secs(84 * 3600));
        assert_eq!(p.next_step(p.max_attempts(), &failed(), NOW, 0.5), NextStep::GiveUp);
        assert!(matches!(
            p.next_step(p.max_attempts() - 1, &failed(), NOW, 0.5),
            NextStep::RetryAt(_)
        ));
    }

    proptest! {
        #[test]
        fn every_retry_is_in_the_future_and_within_the_jitter_band(attempt in 1u32..15, sample in 0.0f64..1.0) {
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
    }
}
