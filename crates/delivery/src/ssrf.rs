//! Which destinations a customer URL may reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL may not be used as an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("the URL is not valid: {0}")]
    Invalid(String),
    #[error("only http and https URLs can receive events")]
    Scheme,
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
pub fn check_destination(url: &str, allow_private: bool) -> Result<url::Url, DestinationError> {
    let parsed = url::Url::parse(url).map_err(|e| DestinationError::Invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DestinationError::Scheme);
    }
    let host = match parsed.host() {
        Some(host) => host,
        None => return Err(DestinationError::Invalid(String::from("the URL has no host"))),
    };
    if allow_private {
        return Ok(parsed);
    }
    let blocked = match host {
        url::Host::Ipv4(ip) => !is_public_ip(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => !is_public_ip(IpAddr::V6(ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
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
/// re-pointed there later) cannot reach it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(BlockedAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

pub(crate) fn resolver() -> Arc<PublicOnlyResolver> {
    Arc::new(PublicOnlyResolver)
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
                matches!(check_destination(url, false), Err(DestinationError::Private(_))),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn accepts_public_addresses_and_names_and_everything_when_allowed() {
        assert!(check_destination("https://hooks.example.com/meta", false).is_ok());
        assert!(check_destination("http://93.184.216.34/", false).is_ok());
        assert!(check_destination("http://127.0.0.1:9000/", true).is_ok());
    }

    #[test]
    fn refuses_other_schemes_and_garbage() {
        assert_eq!(
            check_destination("ftp://example.com/", false).err(),
            Some(DestinationError::Scheme)
        );
        assert!(matches!(
            check_destination("not a url", true),
            Err(DestinationError::Invalid(_))
        ));
    }
}
