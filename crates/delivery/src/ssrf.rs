//! Which destinations a customer URL may reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Where customer URLs may point. The default refuses every address that is not on the public
/// internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Allow every address (local development and tests).
    pub allow_private: bool,
    /// Non-public networks that are allowed all the same (an operator's own services).
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Refuse plain `http://` URLs.
    pub https_only: bool,
}

impl DestinationPolicy {
    /// Allows everything, as local development and tests need.
    pub fn permissive() -> Self {
        Self {
            allow_private: true,
            ..Self::default()
        }
    }

    /// Whether a resolved address may be connected to.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public_ip(ip) || self.allowed_networks.iter().any(|net| net.contains(&ip))
    }
}

/// Why a URL may not be used as an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("the URL is not valid: {0}")]
    Invalid(String),
    #[error("only http and https URLs can receive events")]
    Scheme,
    #[error("only https URLs can receive events here")]
    HttpsOnly,
    #[error("`{0}` is a loopback, private or link-local address; endpoints must be publicly reachable")]
    Private(String),
}

/// True for addresses on the public internet: not loopback, private, link-local (cloud metadata lives
/// there), shared (CGNAT), unspecified, broadcast, multicast or documentation ranges.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// Checks a URL's shape and, when the host is an address or `localhost`, whether it may be reached.
/// Host names are checked again at every connection, when they resolve.
pub fn check_destination(url: &str, policy: &DestinationPolicy) -> Result<url::Url, DestinationError> {
    let parsed = url::Url::parse(url).map_err(|e| DestinationError::Invalid(e.to_string()))?;
    match parsed.scheme() {
        "https" => {}
        "http" if policy.https_only => return Err(DestinationError::HttpsOnly),
        "http" => {}
        _ => return Err(DestinationError::Scheme),
    }
    let Some(host) = parsed.host() else {
        return Err(DestinationError::Invalid(String::from("the URL has no host")));
    };
    let blocked = match host {
        url::Host::Ipv4(ip) => !policy.permits(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => !policy.permits(IpAddr::V6(ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            !policy.allow_private && (name == "localhost" || name.ends_with(".localhost"))
        }
    };
    if blocked {
        return Err(DestinationError::Private(host.to_string()));
    }
    Ok(parsed)
}

/// The error a resolution returns when every address of a name is refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to loopback, private or link-local addresses")]
pub(crate) struct BlockedAddress(pub String);

/// A resolver that drops refused addresses, so that a public name pointing at a private address (or
/// re-pointed there later: DNS rebinding) cannot reach it.
#[derive(Debug, Clone)]
pub(crate) struct PolicyResolver(pub Arc<DestinationPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.permits(a.ip())).collect();
            if permitted.is_empty() {
                return Err(Box::new(BlockedAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_private_loopback_and_metadata_addresses() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://192.168.0.10:8080/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00::1]/",
            "http://localhost:3000/hook",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(
                matches!(
                    check_destination(url, &DestinationPolicy::default()),
                    Err(DestinationError::Private(_))
                ),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn accepts_public_addresses_and_names_and_everything_when_allowed() {
        let strict = DestinationPolicy::default();
        assert!(check_destination("https://hooks.example.com/meta", &strict).is_ok());
        assert!(check_destination("http://93.184.216.34/", &strict).is_ok());
        assert!(check_destination("http://127.0.0.1:9000/", &DestinationPolicy::permissive()).is_ok());
    }

    #[test]
    fn an_allow_list_opens_only_its_networks() -> Result<(), ipnet::AddrParseError> {
        let policy = DestinationPolicy {
            allowed_networks: vec!["10.20.0.0/16".parse()?],
            ..DestinationPolicy::default()
        };
        assert!(check_destination("http://10.20.3.4/hook", &policy).is_ok());
        assert!(check_destination("http://10.21.3.4/hook", &policy).is_err());
        assert!(check_destination("http://169.254.169.254/", &policy).is_err());
        Ok(())
    }

    #[test]
    fn https_only_refuses_plain_http() {
        let policy = DestinationPolicy {
            https_only: true,
            ..DestinationPolicy::default()
        };
        assert_eq!(
            check_destination("http://hooks.example.com/", &policy).err(),
            Some(DestinationError::HttpsOnly)
        );
        assert!(check_destination("https://hooks.example.com/", &policy).is_ok());
    }

    #[test]
    fn refuses_other_schemes_and_garbage() {
        let policy = DestinationPolicy::permissive();
        assert_eq!(
            check_destination("ftp://example.com/", &policy).err(),
            Some(DestinationError::Scheme)
        );
        assert!(matches!(
            check_destination("not a url", &policy),
            Err(DestinationError::Invalid(_))
        ));
    }
}
