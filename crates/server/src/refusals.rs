//! Webhook POSTs the ingress refused, kept so that the operator (and a tenant, for its own apps)
//! can say why: a bad signature, a body that is not a webhook, an unknown app, Pages nobody has
//! onboarded.
//!
//! Only metadata is kept (time, route, app when known, size, reason), never the body: it is
//! unverified, and can be anyone's. What is kept is bounded: at most [`PER_APP_PER_HOUR`] refusals
//! per app (and as many for POSTs whose app is unknown) per hour on each node; beyond that they
//! are only counted and logged, so that a flood of bad POSTs cannot fill the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pagewire_core::{Clock, RefusalId};
use pagewire_store::{Refusal, Store};

use crate::error::ApiError;
use crate::ingress::Throttled;

/// Refusals kept per app and hour on each node.
pub const PER_APP_PER_HOUR: u32 = 100;
const HOUR_MS: i64 = 3_600_000;
/// The longest detail kept.
const MAX_DETAIL: usize = 300;

/// The route a POST came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/webhooks/meta`: the app is found through the entries' Pages.
    Shared,
    /// `/webhooks/meta/{app_id}`.
    App,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::App => "app",
        }
    }
}

/// Records refusals within their bound. Cheap to share.
#[derive(Debug)]
pub struct RefusalLog {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Per app (`None`: unknown), the hour counted and how many were kept in it. Only registered
    /// apps' ids are keys, so the map is as large as the app table at most.
    kept: Mutex<HashMap<Option<String>, (i64, u32)>>,
    over_bound: Throttled,
}

/// The stable reason a refused POST is kept under, or `None` for answers that say nothing about
/// the POST itself (the node is overloaded or its database unavailable).
pub fn reason(error: &ApiError) -> Option<&'static str> {
    match error {
        ApiError::NotFound(_) => Some("unknown_app"),
        ApiError::Signature(_) | ApiError::InvalidJson(_) | ApiError::DuplicateKey(_) | ApiError::PayloadTooLarge => {
            Some(error.code())
        }
        _ => None,
    }
}

impl RefusalLog {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            kept: Mutex::default(),
            over_bound: Throttled::default(),
        }
    }

    /// Keeps one refusal if its app's bound for this hour allows. `app_id` must be a registered
    /// app's (or `None`): an id from the URL of an unknown app is never a key.
    pub async fn record(&self, route: Route, app_id: Option<&str>, size: u64, reason: &'static str, detail: String) {
        let now = self.clock.now_ms();
        if !self.admit(app_id, now) {
            if let Some(total) = self.over_bound.note(now) {
                tracing::warn!(
                    total,
                    per_app_per_hour = PER_APP_PER_HOUR,
                    "refused webhooks beyond the number kept per app and hour were only counted"
                );
            }
            return;
        }
        let mut detail = detail;
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        let refusal = Refusal {
            id: RefusalId::at(now),
            received_at: now,
            route: route.as_str().to_owned(),
            app_id: app_id.map(str::to_owned),
            size,
            reason: reason.to_owned(),
            detail: Some(detail),
        };
        if let Err(e) = self.store.record_refusals(std::slice::from_ref(&refusal)).await {
            tracing::warn!(error = %e, reason, "keeping a refused webhook's record failed");
        }
    }

    fn admit(&self, app_id: Option<&str>, now: i64) -> bool {
        let hour = now.div_euclid(HOUR_MS);
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = kept.entry(app_id.map(str::to_owned)).or_insert((hour, 0));
        if slot.0 != hour {
            *slot = (hour, 0);
        }
        if slot.1 >= PER_APP_PER_HOUR {
            return false;
        }
        slot.1 += 1;
        true
    }
}
