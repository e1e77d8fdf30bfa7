//! The routing cache: who owns each Page, which app secret verifies it, which endpoints want what.
//!
//! Ingress reads it on every POST without touching the database. It is an immutable snapshot behind
//! a lock that is held only to clone an `Arc`; the admin API reloads it after every write that changes
//! routing, and a background refresh picks up writes made by other nodes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pagewire_core::{EndpointFilter, EndpointId, EventFacts, Platform, TenantId};
use pagewire_store::{RoutingData, Store, StoreError};
use subtle::ConstantTimeEq;

/// A registered Meta app as ingress sees it.
#[derive(Debug)]
pub struct AppRoute {
    pub app_id: String,
    pub tenant_id: Option<TenantId>,
    app_secret: Vec<u8>,
    /// The secret before a rotation, and until when it still verifies.
    previous_secret: Option<(Vec<u8>, i64)>,
    verify_token: Vec<u8>,
}

impl AppRoute {
    /// The secrets that verify at `now`: the current one, then a rotated-out one in its overlap.
    pub fn app_secrets(&self, now: i64) -> impl Iterator<Item = &[u8]> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(secret, _)| secret.as_slice());
        std::iter::once(self.app_secret.as_slice()).chain(previous)
    }

    /// Compares in constant time, so the answer's timing tells nothing about the token.
    pub fn verify_token_matches(&self, candidate: &str) -> bool {
        bool::from(self.verify_token.ct_eq(candidate.as_bytes()))
    }
}

#[derive(Debug, Clone)]
pub struct PageRoute {
    pub tenant_id: TenantId,
    pub app_id: String,
    pub platform: Platform,
}

#[derive(Debug)]
pub struct EndpointRoute {
    pub id: EndpointId,
    pub filter: EndpointFilter,
}

/// One consistent view of the routing tables.
#[derive(Debug, Default)]
pub struct Routing {
    apps: HashMap<String, Arc<AppRoute>>,
    pages: HashMap<String, PageRoute>,
    endpoints: HashMap<TenantId, Vec<EndpointRoute>>,
}

impl Routing {
    pub fn from_data(data: RoutingData) -> Self {
        let apps = data
            .apps
            .into_iter()
            .map(|app| {
                let route = AppRoute {
                    app_id: app.app_id.clone(),
                    tenant_id: app.tenant_id,
                    app_secret: app.app_secret.expose().as_bytes().to_vec(),
                    previous_secret: app
                        .previous_secret
                        .map(|(secret, until)| (secret.expose().as_bytes().to_vec(), until)),
                    verify_token: app.verify_token.expose().as_bytes().to_vec(),
                };
                (app.app_id, Arc::new(route))
            })
            .collect();
        // An unproven claim receives nothing: its entries are as unknown as any other Page's.
        let pages = data
            .pages
            .into_iter()
            .filter(|p| p.proof.is_routed())
            .map(|p| {
                (
                    p.page_id,
                    PageRoute {
                        tenant_id: p.tenant_id,
                        app_id: p.app_id,
                        platform: p.platform,
                    },
                )
            })
            .collect();
        let mut endpoints: HashMap<TenantId, Vec<EndpointRoute>> = HashMap::new();
        for ep in data.endpoints.into_iter().filter(|e| e.enabled) {
            endpoints.entry(ep.tenant_id).or_default().push(EndpointRoute {
                id: ep.id,
                filter: ep.filter,
            });
        }
        Self { apps, pages, endpoints }
    }

    pub fn app(&self, app_id: &str) -> Option<&Arc<AppRoute>> {
        self.apps.get(app_id)
    }

    pub fn apps(&self) -> impl Iterator<Item = &Arc<AppRoute>> {
        self.apps.values()
    }

    pub fn page(&self, page_id: &str) -> Option<&PageRoute> {
        self.pages.get(page_id)
    }

    /// The enabled endpoints of `tenant` whose filters accept the event.
    pub fn endpoints_for(&self, tenant: &TenantId, event: &EventFacts<'_>) -> Vec<EndpointId> {
        self.endpoints
            .get(tenant)
            .map(|eps| {
                eps.iter()
                    .filter(|ep| ep.filter.matches(event))
                    .map(|ep| ep.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The shared, reloadable routing snapshot.
#[derive(Debug, Clone)]
pub struct RoutingCache {
    store: Arc<dyn Store>,
    current: Arc<RwLock<Arc<Routing>>>,
}

impl RoutingCache {
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let routing = Routing::from_data(store.load_routing().await?);
        Ok(Self {
            store,
            current: Arc::new(RwLock::new(Arc::new(routing))),
        })
    }

    /// The current snapshot; hold it for the length of one request.
    pub fn snapshot(&self) -> Arc<Routing> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the tables again and swaps the snapshot.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let routing = Arc::new(Routing::from_data(self.store.load_routing().await?));
        match self.current.write() {
            Ok(mut guard) => *guard = routing,
            Err(poisoned) => *poisoned.into_inner() = routing,
        }
        Ok(())
    }
}
