//! The operator's forward proxy for deliveries, and the check a target passes before going through it.
//!
//! Without a proxy the client connects by itself, and [`PolicyResolver`](crate::ssrf::PolicyResolver)
//! judges every address it is about to connect to. Through a proxy it is the proxy that resolves the
//! target: the client resolves only the proxy's name. So before a request is handed to the proxy, the
//! target's own name is resolved here, and every address it has must pass the destination policy
//! ([`CheckedHosts`]); an address in the URL was already judged by
//! [`check_destination`](crate::check_destination).
//!
//! What this does not cover: the proxy resolves the name again, by itself. A name whose answers change
//! between the two lookups (DNS rebinding with a short TTL), or that the proxy's resolver answers
//! differently (split-horizon DNS), can still lead the proxy somewhere internal. A proxy used for
//! egress should refuse private destinations itself; this check keeps Pagewire from asking it to.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::ssrf::DestinationPolicy;

/// A forward proxy that every delivery goes through: `http://` or `https://`, with credentials in
/// the URL if it wants them (`http://user:password@proxy.internal:3128`). `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveryProxy {
    url: url::Url,
}

/// Why a proxy URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy URL is not valid: {0}")]
    Invalid(String),
    #[error("the proxy URL must start with http:// or https://")]
    Scheme,
}

impl DeliveryProxy {
    /// Parses and checks a proxy URL. Errors never repeat the URL, which may hold a password.
    pub fn parse(url: &str) -> Result<Self, ProxyError> {
        let url = url::Url::parse(url).map_err(|e| ProxyError::Invalid(e.to_string()))?;
        // The client ignores a proxy whose scheme it cannot use, and would then connect directly:
        // only the schemes it takes are accepted.
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ProxyError::Scheme);
        }
        if url.host().is_none() {
            return Err(ProxyError::Invalid(String::from("the URL has no host")));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(ProxyError::Invalid(String::from(
                "a proxy URL has a scheme, a host and a port, and no path",
            )));
        }
        Ok(Self { url })
    }

    /// The proxy's host when it is a name (an address is connected to without resolving).
    pub(crate) fn host_name(&self) -> Option<&str> {
        match self.url.host()? {
            url::Host::Domain(name) => Some(name),
            url::Host::Ipv4(_) | url::Host::Ipv6(_) => None,
        }
    }

    /// The proxy as the client takes it, for every scheme.
    pub(crate) fn to_reqwest(&self) -> Result<reqwest::Proxy, reqwest::Error> {
        reqwest::Proxy::all(self.url.as_str())
    }
}

impl FromStr for DeliveryProxy {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for DeliveryProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = if self.url.username().is_empty() && self.url.password().is_none() {
            ""
        } else {
            "[redacted]@"
        };
        write!(
            f,
            "DeliveryProxy({}://{credentials}{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or_default()
        )?;
        if let Some(port) = self.url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(")")
    }
}

/// How long a host name's verdict is reused. Through a proxy, every delivery would otherwise wait
/// for a lookup of its own, where a direct delivery resolves only when its pool opens a connection;
/// a few seconds bring that back to one lookup per host and interval at any rate. It adds little to
/// what a rebinding name can do already, since the proxy resolves again anyway (see the module's
/// docs), and a name re-pointed at a private address is refused again within the interval.
const CHECK_TTL: Duration = Duration::from_secs(10);

/// Most host names remembered. Past it the expired ones go, and all of them if that is not enough:
/// a tenant cycling through names costs lookups, never memory.
const MAX_CHECKED_HOSTS: usize = 4096;

/// Host names whose addresses were judged lately, and the verdicts.
#[derive(Debug, Default)]
pub(crate) struct CheckedHosts {
    verdicts: Mutex<HashMap<String, Verdict>>,
}

#[derive(Debug, Clone, Copy)]
struct Verdict {
    permitted: bool,
    until: Instant,
}

/// Why a target may not be handed to the proxy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostRefusal {
    /// One of the name's addresses is refused: the proxy might pick it.
    #[error("{0} resolves to a loopback, private or link-local address")]
    Blocked(String),
    /// The name could not be resolved here, so it cannot be judged (nor, most likely, reached).
    #[error("could not resolve {host}: {source}")]
    Lookup { host: String, source: io::Error },
}

impl CheckedHosts {
    /// Resolves `host` (or remembers doing so) and admits it when every address passes `policy`.
    pub(crate) async fn check(&self, host: &str, policy: &DestinationPolicy) -> Result<(), HostRefusal> {
        self.check_at(host, policy, Instant::now(), |host| async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|addr| addr.ip())
                .collect())
        })
        .await
    }

    /// [`CheckedHosts::check`] at `now`, with `lookup` as the resolver.
    async fn check_at<F, Fut>(
        &self,
        host: &str,
        policy: &DestinationPolicy,
        now: Instant,
        lookup: F,
    ) -> Result<(), HostRefusal>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = io::Result<Vec<IpAddr>>>,
    {
        let remembered = self
            .verdicts()
            .get(host)
            .filter(|verdict| verdict.until > now)
            .map(|verdict| verdict.permitted);
        let permitted = match remembered {
            Some(permitted) => permitted,
            None => {
                let addrs = lookup(host.to_owned()).await.map_err(|source| HostRefusal::Lookup {
                    host: host.to_owned(),
                    source,
                })?;
                if addrs.is_empty() {
                    return Err(HostRefusal::Lookup {
                        host: host.to_owned(),
                        source: io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"),
                    });
                }
                // All of them: the proxy, not Pagewire, picks the one it connects to.
                let permitted = addrs.iter().all(|ip| policy.permits(*ip));
                self.remember(host, permitted, now);
                permitted
            }
        };
        if permitted {
            Ok(())
        } else {
            Err(HostRefusal::Blocked(host.to_owned()))
        }
    }

    fn remember(&self, host: &str, permitted: bool, now: Instant) {
        let mut verdicts = self.verdicts();
        if verdicts.len() >= MAX_CHECKED_HOSTS {
            verdicts.retain(|_, verdict| verdict.until > now);
            if verdicts.len() >= MAX_CHECKED_HOSTS {
                verdicts.clear();
            }
        }
        verdicts.insert(
            host.to_owned(),
            Verdict {
                permitted,
                until: now + CHECK_TTL,
            },
        );
    }

    fn verdicts(&self) -> MutexGuard<'_, HashMap<String, Verdict>> {
        self.verdicts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn accepts_http_and_https_proxies_and_hides_their_credentials() -> Result<(), ProxyError> {
        let proxy = DeliveryProxy::parse("http://pagewire:hunter2@proxy.internal:3128")?;
        assert_eq!(
            format!("{proxy:?}"),
            "DeliveryProxy(http://[redacted]@proxy.internal:3128)"
        );
        assert_eq!(proxy.host_name(), Some("proxy.internal"));
        let proxy: DeliveryProxy = "https://10.0.0.5".parse()?;
        assert_eq!(format!("{proxy:?}"), "DeliveryProxy(https://10.0.0.5)");
        assert_eq!(proxy.host_name(), None, "an address is not resolved");
        Ok(())
    }

    #[test]
    fn refuses_proxies_the_client_would_ignore() {
        assert_eq!(
            DeliveryProxy::parse("socks5://proxy.internal:1080"),
            Err(ProxyError::Scheme)
        );
        for bad in [
            "proxy.internal:3128",
            "http://",
            "http://proxy.internal:3128/path",
            "http://u:hunter2@proxy.internal:3128/?q",
        ] {
            let error = DeliveryProxy::parse(bad).err();
            assert!(error.is_some(), "{bad}");
            assert!(
                !format!("{error:?}").contains("hunter2"),
                "errors do not repeat the URL"
            );
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().filter_map(|ip| ip.parse().ok()).collect()
    }

    #[tokio::test]
    async fn admits_a_name_only_when_every_address_passes_the_policy() {
        let hosts = CheckedHosts::default();
        let strict = DestinationPolicy::default();
        let now = Instant::now();
        let public = hosts
            .check_at("hooks.example.com", &strict, now, |_| async {
                Ok(ips(&["93.184.216.34", "2606:2800:220:1::1"]))
            })
            .await;
        assert!(public.is_ok(), "{public:?}");
        for (name, addrs) in [
            ("metadata.google.internal", ips(&["169.254.169.254"])),
            ("mixed.example.com", ips(&["93.184.216.34", "10.0.0.1"])),
            ("nat64.example.com", ips(&["64:ff9b::a9fe:a9fe"])),
            ("azure.example.com", ips(&["168.63.129.16"])),
        ] {
            let verdict = hosts.check_at(name, &strict, now, |_| async move { Ok(addrs) }).await;
            assert!(matches!(verdict, Err(HostRefusal::Blocked(_))), "{name}: {verdict:?}");
        }
        let nothing = hosts
            .check_at("empty.example.com", &strict, now, |_| async { Ok(Vec::new()) })
            .await;
        assert!(matches!(nothing, Err(HostRefusal::Lookup { .. })));
    }

    #[tokio::test]
    async fn allowed_networks_and_allow_private_open_names_too() -> Result<(), ipnet::AddrParseError> {
        let hosts = CheckedHosts::default();
        let allowed = DestinationPolicy {
            allowed_networks: vec!["10.20.0.0/16".parse()?],
            ..DestinationPolicy::default()
        };
        let now = Instant::now();
        let lookup = |_| async { Ok(ips(&["10.20.3.4"])) };
        assert!(hosts.check_at("svc.internal", &allowed, now, lookup).await.is_ok());
        let lookup = |_| async { Ok(ips(&["127.0.0.1"])) };
        let permissive = DestinationPolicy::permissive();
        assert!(CheckedHosts::default()
            .check_at("localhost", &permissive, now, lookup)
            .await
            .is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn remembers_a_verdict_until_it_expires_but_never_a_failed_lookup() {
        let hosts = CheckedHosts::default();
        let strict = DestinationPolicy::default();
        let lookups = AtomicUsize::new(0);
        let lookup = |answer: &'static str| {
            let lookups = &lookups;
            move |_| async move {
                lookups.fetch_add(1, Ordering::SeqCst);
                Ok(ips(&[answer]))
            }
        };
        let start = Instant::now();
        assert!(hosts
            .check_at("a.example.com", &strict, start, lookup("93.184.216.34"))
            .await
            .is_ok());
        let later = start + CHECK_TTL - Duration::from_millis(1);
        assert!(
            hosts
                .check_at("a.example.com", &strict, later, lookup("10.0.0.1"))
                .await
                .is_ok(),
            "the verdict is reused within its interval"
        );
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        let expired = start + CHECK_TTL;
        assert!(
            matches!(
                hosts
                    .check_at("a.example.com", &strict, expired, lookup("10.0.0.1"))
                    .await,
                Err(HostRefusal::Blocked(_))
            ),
            "a name re-pointed at a private address is refused once its verdict expires"
        );
        assert_eq!(lookups.load(Ordering::SeqCst), 2);

        let failing = |_| async { Err(io::Error::new(io::ErrorKind::NotFound, "no such host")) };
        assert!(hosts.check_at("b.example.com", &strict, start, failing).await.is_err());
        assert!(hosts
            .check_at("b.example.com", &strict, start, lookup("93.184.216.34"))
            .await
            .is_ok());
        assert_eq!(lookups.load(Ordering::SeqCst), 3, "a failed lookup is not remembered");
    }

    #[test]
    fn forgets_everything_rather_than_grow_past_its_bound() {
        let hosts = CheckedHosts::default();
        let now = Instant::now();
        for i in 0..MAX_CHECKED_HOSTS {
            hosts.remember(&format!("h{i}.example.com"), true, now);
        }
        hosts.remember("one-more.example.com", true, now);
        assert_eq!(hosts.verdicts().len(), 1);
        let later = now + CHECK_TTL;
        hosts.remember("recent.example.com", true, later);
        for i in 0..MAX_CHECKED_HOSTS - 2 {
            hosts.remember(&format!("h{i}.example.com"), true, now);
        }
        hosts.remember("fresh.example.com", true, later);
        let left: Vec<String> = hosts.verdicts().keys().cloned().collect();
        assert_eq!(left.len(), 2, "expired verdicts go first: {left:?}");
        assert!(left.contains(&String::from("recent.example.com")));
    }
}
