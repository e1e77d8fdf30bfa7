//! Page subscriptions: which webhook fields a Page should send to its app, what Meta has, and the
//! background check that finds subscriptions Meta dropped (it removes an app whose webhook kept
//! failing) and, per the tenant's `auto_resubscribe`, subscribes them again or reports them.

use std::collections::BTreeSet;

use pagewire_core::{OperationalEvent, Platform};
use pagewire_graph::{GraphClient, GraphError};
use pagewire_store::{Page, PageCredentials, Store, StoreError, SubscriptionCheck};
use serde::Serialize;

/// What a Messenger Page subscribes to unless it says otherwise: every kind Pagewire normalizes.
pub const MESSENGER_FIELDS: &[&str] = &[
    "messages",
    "messaging_postbacks",
    "messaging_optins",
    "messaging_referrals",
    "message_deliveries",
    "message_reads",
    "message_echoes",
    "message_reactions",
    "message_edits",
    "messaging_handovers",
    "standby",
    "messaging_account_linking",
    "messaging_policy_enforcement",
];

/// The fields the Page should have, or `None` for platforms whose subscription is not a Page's
/// (Instagram accounts subscribe through their linked Page; WhatsApp accounts through the app).
pub fn wanted_fields(page: &Page) -> Option<Vec<String>> {
    if page.platform != Platform::Messenger {
        return None;
    }
    Some(
        page.subscribed_fields
            .clone()
            .unwrap_or_else(|| MESSENGER_FIELDS.iter().map(|f| (*f).to_owned()).collect()),
    )
}

/// The Page's subscription as Meta has it, beside what Pagewire wants.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionState {
    pub page_id: String,
    pub app_id: String,
    pub wanted: Vec<String>,
    /// The fields Meta has for the app; null when the app is not subscribed at all.
    pub subscribed: Option<Vec<String>>,
    /// Wanted and not subscribed.
    pub missing: Vec<String>,
    pub drift: bool,
}

impl SubscriptionState {
    fn new(page: &Page, wanted: Vec<String>, subscribed: Option<Vec<String>>) -> Self {
        let have: BTreeSet<&str> = subscribed.iter().flatten().map(String::as_str).collect();
        let missing: Vec<String> = wanted.iter().filter(|f| !have.contains(f.as_str())).cloned().collect();
        Self {
            page_id: page.page_id.clone(),
            app_id: page.app_id.clone(),
            drift: subscribed.is_none() || !missing.is_empty(),
            wanted,
            subscribed,
            missing,
        }
    }
}

/// Why a subscription cannot be managed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscriptions are managed for Messenger Pages; subscribe an Instagram account through its linked Page, and WhatsApp accounts through the app")]
    Unsupported,
    #[error("the Page was onboarded without an access token; add one to manage its subscription")]
    NoToken,
    #[error(transparent)]
    Graph(#[from] GraphError),
}

fn parts(creds: &PageCredentials) -> Result<(Vec<String>, &str), SubscriptionError> {
    let wanted = wanted_fields(&creds.page).ok_or(SubscriptionError::Unsupported)?;
    let token = creds.access_token.as_ref().ok_or(SubscriptionError::NoToken)?;
    Ok((wanted, token.expose()))
}

/// Reads the Page's subscription from the Graph API.
pub async fn inspect(graph: &GraphClient, creds: &PageCredentials) -> Result<SubscriptionState, SubscriptionError> {
    let (wanted, token) = parts(creds)?;
    let page = &creds.page;
    let apps = graph
        .page_subscribed_apps(&page.page_id, token, creds.app_secret.expose())
        .await?;
    let subscribed = apps
        .into_iter()
        .find(|app| app.id == page.app_id)
        .map(|app| app.subscribed_fields);
    Ok(SubscriptionState::new(page, wanted, subscribed))
}

/// Subscribes the Page to its app with the fields it wants, and reads the result back.
pub async fn subscribe(graph: &GraphClient, creds: &PageCredentials) -> Result<SubscriptionState, SubscriptionError> {
    let (wanted, token) = parts(creds)?;
    let page = &creds.page;
    graph
        .subscribe_page(&page.page_id, token, creds.app_secret.expose(), &wanted)
        .await?;
    inspect(graph, creds).await
}

pub async fn unsubscribe(graph: &GraphClient, creds: &PageCredentials) -> Result<(), SubscriptionError> {
    let (_, token) = parts(creds)?;
    graph
        .unsubscribe_page(&creds.page.page_id, token, creds.app_secret.expose())
        .await?;
    Ok(())
}

/// What one pass of the subscription check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub checked: u32,
    pub repaired: u32,
    pub lost: u32,
    pub failed: u32,
}

/// Checks every Messenger Page with an access token; repairs or reports what drifted.
pub async fn check_all(store: &dyn Store, graph: &GraphClient, now: i64) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    let mut lost_events = Vec::new();
    for creds in store.pages_with_tokens().await? {
        if wanted_fields(&creds.page).is_none() {
            continue;
        }
        report.checked += 1;
        let page = &creds.page;
        let outcome = match inspect(graph, &creds).await {
            Ok(state) if !state.drift => Ok(("ok", None)),
            Ok(state) => {
                let auto = store.get_tenant(&page.tenant_id).await?.auto_resubscribe;
                if auto {
                    match subscribe(graph, &creds).await {
                        Ok(after) if !after.drift => {
                            report.repaired += 1;
                            tracing::info!(page_id = %page.page_id, app_id = %page.app_id, missing = ?state.missing, "Page subscription repaired");
                            Ok(("repaired", Some(format!("resubscribed: {}", state.missing.join(", ")))))
                        }
                        Ok(after) => Err(format!(
                            "still missing after resubscribing: {}",
                            after.missing.join(", ")
                        )),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    report.lost += 1;
                    tracing::warn!(page_id = %page.page_id, app_id = %page.app_id, missing = ?state.missing, "Page subscription lost");
                    let data = serde_json::json!({
                        "page_id": page.page_id,
                        "app_id": page.app_id,
                        "missing_fields": state.missing,
                        "subscribed": state.subscribed.is_some(),
                    });
                    lost_events.push(OperationalEvent::new(
                        "subscription.lost",
                        page.tenant_id.clone(),
                        now,
                        data,
                    ));
                    Ok(("lost", Some(format!("missing: {}", state.missing.join(", ")))))
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let check = match outcome {
            Ok((status, detail)) => SubscriptionCheck {
                status: status.to_owned(),
                detail,
                checked_at: now,
            },
            Err(detail) => {
                report.failed += 1;
                tracing::warn!(page_id = %page.page_id, error = %detail, "checking a Page subscription failed");
                SubscriptionCheck {
                    status: String::from("error"),
                    detail: Some(detail),
                    checked_at: now,
                }
            }
        };
        store.record_subscription_check(&page.page_id, &check).await?;
    }
    if !lost_events.is_empty() {
        store.emit_operational(&lost_events, now).await?;
    }
    Ok(report)
}
