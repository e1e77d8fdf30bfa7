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

/// True for addresses on the public internet: global unicast only.
///
/// IPv4 refuses loopback, private, link-local (cloud metadata lives there), shared (CGNAT),
/// unspecified, `0.0.0.0/8`, broadcast, multicast, reserved (`240.0.0.0/4`), documentation,
/// benchmarking (`198.18.0.0/15`), IETF protocol assignments (`192.0.0.0/24`) and Azure's host address
/// (`168.63.129.16`, which answers metadata and DNS from inside a VM).
///
/// IPv6 must be global unicast (`2000::/3`), and not documentation or benchmarking. Addresses that
/// carry an IPv4 address a packet ends up at (mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`, Teredo `2001::/32`) are judged by that IPv4 address. IPv4-compatible (`::/96`) and
/// IPv4-translated (`::ffff:0:0:0/96`) addresses lie outside `2000::/3` and are refused.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match carried_ipv4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

/// Azure's virtual public address for the host (wire server, DNS, instance metadata).
const AZURE_HOST: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments (DS-Lite, NAT64 discovery, ...)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
        || ip == AZURE_HOST)
}

/// The IPv4 address that traffic to an IPv6 address is delivered to, for the forms that carry one:
/// IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`, translated by a gateway on the way),
/// 6to4 (`2002:AABB:CCDD::/48`, relayed to `AA.BB.CC.DD`) and Teredo (`2001:0:server:flags:port:client`,
/// the client's address inverted in the last 32 bits). A private address inside any of them is still
/// private.
fn carried_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(last))),
        _ => None,
    }
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Global unicast is `2000::/3`: this leaves out loopback, unspecified, IPv4-compatible and
    // IPv4-translated, discard-only, local-use NAT64 (`64:ff9b:1::/48`), unique local, site-local,
    // link-local and multicast addresses in one test.
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    let documentation = (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] < 0x1000);
    let benchmarking = s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0;
    global_unicast && !documentation && !benchmarking
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
///
/// The operator's proxy, when deliveries go through one, is the only name resolved without the
/// policy: the operator chose it, it usually lives on a private network, and with it configured the
/// client connects to nothing else (targets are checked before the request, by
/// [`CheckedHosts`](crate::proxy::CheckedHosts)).
#[derive(Debug, Clone)]
pub(crate) struct PolicyResolver {
    pub policy: Arc<DestinationPolicy>,
    /// The proxy's host name, if it has one (an address is connected to without resolving).
    pub proxy_host: Option<Arc<str>>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let trusted = self
            .proxy_host
            .as_deref()
            .is_some_and(|proxy| proxy.eq_ignore_ascii_case(name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| trusted || policy.permits(a.ip()))
                .collect();
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

    fn judged(addresses: &[&str]) -> Vec<(String, bool)> {
        addresses
            .iter()
            .map(|a| match a.parse::<IpAddr>() {
                Ok(ip) => ((*a).to_owned(), is_public_ip(ip)),
                Err(_) => (format!("{a} (not an address)"), false),
            })
            .collect()
    }

    fn assert_public(addresses: &[&str]) {
        for (address, public) in judged(addresses) {
            assert!(public, "{address} is public");
        }
    }

    fn assert_refused(addresses: &[&str]) {
        for (address, public) in judged(addresses) {
            assert!(!public, "{address} is refused");
        }
    }

    #[test]
    fn accepts_global_unicast_ipv6() {
        assert_public(&[
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
            "2001:1::1",
            "3fff:1000::1",
        ]);
    }

    #[test]
    fn refuses_ipv6_outside_global_unicast_and_its_special_ranges() {
        assert_refused(&[
            "::",
            "::1",
            "100::1",             // discard-only
            "64:ff9b:1::808:808", // local-use NAT64
            "fc00::1",
            "fd00:ec2::254", // AWS's metadata over IPv6
            "fe80::1",
            "fec0::1", // site-local
            "ff02::1",
            "4000::1",
            "2001:db8::1", // documentation
            "3fff::1",     // documentation
            "3fff:fff::1",
            "2001:2::1", // benchmarking
        ]);
    }

    #[test]
    fn refuses_ipv4_compatible_and_ipv4_translated_even_around_a_public_ipv4() {
        assert_refused(&["::8.8.8.8", "::127.0.0.1", "::ffff:0:8.8.8.8", "::ffff:0:127.0.0.1"]);
    }

    #[test]
    fn judges_ipv4_mapped_by_the_ipv4_it_carries() {
        assert_public(&["::ffff:8.8.8.8"]);
        assert_refused(&[
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:168.63.129.16",
        ]);
    }

    #[test]
    fn judges_nat64_by_the_ipv4_it_carries() {
        assert_public(&["64:ff9b::808:808", "64:ff9b::8.8.4.4"]);
        assert_refused(&[
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::192.0.0.170",
        ]);
    }

    #[test]
    fn judges_6to4_by_the_ipv4_it_carries() {
        assert_public(&["2002:808:808::1", "2002:5db8:d822:1::"]);
        assert_refused(&[
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2002:a00:1:ffff::1",
            "2002:c0a8:101::1",
            "2002:a83f:8110::1",
        ]);
    }

    #[test]
    fn judges_teredo_by_the_client_ipv4_it_carries() {
        // The client's address is the last 32 bits, inverted: 8.8.8.8 is f7f7:f7f7.
        assert_public(&["2001:0:4136:e378:8000:63bf:f7f7:f7f7"]);
        assert_refused(&[
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // 127.0.0.1
            "2001:0:4136:e378:8000:63bf:5601:5601", // 169.254.169.254
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // 10.0.0.1
            "2001::ffff:ffff",                      // 0.0.0.0
        ]);
    }

    #[test]
    fn refuses_ietf_protocol_assignments_and_azures_host_address() {
        assert_refused(&["192.0.0.0", "192.0.0.8", "192.0.0.170", "192.0.0.255", "168.63.129.16"]);
        assert_public(&[
            "192.0.1.1",
            "191.255.255.255",
            "168.63.129.15",
            "168.63.129.17",
            "8.8.8.8",
        ]);
    }

    #[test]
    fn still_refuses_every_other_non_public_ipv4() {
        assert_refused(&[
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
        ]);
        assert_public(&[
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.255",
        ]);
    }

    #[test]
    fn refuses_the_new_ranges_in_urls_too() {
        for url in [
            "http://[2002:a9fe:a9fe::1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
            "http://[::7f00:1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://192.0.0.170/",
            "http://168.63.129.16/metadata/instance",
        ] {
            assert!(
                matches!(
                    check_destination(url, &DestinationPolicy::default()),
                    Err(DestinationError::Private(_))
                ),
                "{url} should be refused"
            );
        }
        assert!(check_destination("http://[2606:4700:4700::1111]/", &DestinationPolicy::default()).is_ok());
    }

    #[test]
    fn allow_private_and_allowed_networks_still_open_what_they_open() -> Result<(), ipnet::AddrParseError> {
        let permissive = DestinationPolicy::permissive();
        for ip in [
            "168.63.129.16",
            "192.0.0.170",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0:7f00:1",
            "fe80::1",
        ] {
            assert!(ip.parse().is_ok_and(|ip| permissive.permits(ip)), "{ip}");
        }
        let allowed = DestinationPolicy {
            allowed_networks: vec!["192.0.0.0/29".parse()?, "2002:a00::/24".parse()?],
            ..DestinationPolicy::default()
        };
        for (ip, permitted) in [
            ("192.0.0.5", true),
            ("192.0.0.170", false),
            ("2002:a00:1::1", true),
            ("2002:c0a8:101::1", false),
            ("168.63.129.16", false),
        ] {
            assert_eq!(ip.parse().is_ok_and(|ip| allowed.permits(ip)), permitted, "{ip}");
        }
        Ok(())
    }
}
