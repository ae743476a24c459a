//! Real-time facts of the live request that Conditional Access needs and the wire does not
//! hand over directly: the device platform (from the User-Agent) and the client IP (the socket
//! peer, or a trusted proxy's header). Pure string and address work; the server passes the
//! header values in.

use std::net::{IpAddr, SocketAddr};

use super::cidr::Cidr;
use super::evaluate::DevicePlatform;
use crate::limits::{CLIENT_IP_HEADER_ENTRIES_MAX, USER_AGENT_BYTES_SCANNED};

impl DevicePlatform {
    /// Reads a platform name as Graph writes it (`android`, `iOS`, `windows`, `windowsPhone`,
    /// `macOS`, `linux`), case-insensitively, as a snapshot records it.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Android,
            Self::Ios,
            Self::Windows,
            Self::WindowsPhone,
            Self::MacOs,
            Self::Linux,
        ]
        .into_iter()
        .find(|p| p.graph_name().eq_ignore_ascii_case(name))
    }

    /// The platform's Graph name.
    pub const fn graph_name(self) -> &'static str {
        match self {
            Self::Android => "android",
            Self::Ios => "iOS",
            Self::Windows => "windows",
            Self::WindowsPhone => "windowsPhone",
            Self::MacOs => "macOS",
            Self::Linux => "linux",
        }
    }

    /// The platform a User-Agent names, by the tokens browsers and native HTTP stacks put in it;
    /// `None` when it names none (policies with a platform condition then *may* apply).
    ///
    /// Heuristics, first match wins, on the first `limits::USER_AGENT_BYTES_SCANNED` bytes:
    /// 1. `Windows Phone` → `windowsPhone` (those agents also say `Android` or `Windows`);
    /// 2. `iPhone`, `iPad`, `iPod` or `iOS` → `iOS` (their agents say `like Mac OS X`);
    /// 3. `Android` → `android` (Android agents also say `Linux`);
    /// 4. `Windows` → `windows`;
    /// 5. `Macintosh` or `Mac OS X` → `macOS` (iPadOS Safari asks for desktop pages with a
    ///    `Macintosh` agent: it is seen as macOS, as Entra sees it);
    /// 6. `Linux` or `X11` → `linux` (Chrome OS's `CrOS` agent is not a Graph platform: `None`).
    ///
    /// A User-Agent is the client's claim, not proof: a policy that must not be dodged by
    /// lying about the platform should not rely on the platform condition (Entra documents the
    /// same caveat).
    pub fn from_user_agent(user_agent: &str) -> Option<Self> {
        let scanned = prefix_at_char_boundary(user_agent, USER_AGENT_BYTES_SCANNED);
        let has = |token: &str| scanned.contains(token);
        if has("CrOS") {
            return None;
        }
        if has("Windows Phone") {
            Some(Self::WindowsPhone)
        } else if has("iPhone") || has("iPad") || has("iPod") || has("iOS") {
            Some(Self::Ios)
        } else if has("Android") {
            Some(Self::Android)
        } else if has("Windows") {
            Some(Self::Windows)
        } else if has("Macintosh") || has("Mac OS X") {
            Some(Self::MacOs)
        } else if has("Linux") || has("X11") {
            Some(Self::Linux)
        } else {
            None
        }
    }
}

fn prefix_at_char_boundary(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Where the client's IP comes from (`[policy] trusted_proxies`, `client_ip_header`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIpConfig {
    /// Peers whose `header` is believed. Empty: the socket peer is always the client.
    pub trusted_proxies: Vec<Cidr>,
    /// A header holding a comma-separated list of addresses, client first, each proxy
    /// appending the address it saw (`X-Forwarded-For`), lowercase. `None`: no header.
    pub header: Option<String>,
}

/// Why the client IP could not be determined. The request is refused (the location condition
/// cannot be evaluated, and guessing the proxy's own address could place the client in a
/// trusted location).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIpError {
    /// An entry of the header from a trusted proxy is not an IP address.
    #[error("client IP header entry {index} is not an IP address")]
    Malformed {
        /// Position of the entry, counting from the right (0 = appended by our peer).
        index: usize,
    },
    /// The header has more entries than `limits::CLIENT_IP_HEADER_ENTRIES_MAX`.
    #[error("client IP header has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
}

/// The client's IP for Conditional Access. The socket `peer`, unless it is a trusted proxy and
/// the configured header is present: then the header's entries are read right to left,
/// skipping those that are themselves trusted proxies, and the first untrusted one is the
/// client (the rightmost address no trusted proxy vouches for; entries left of it could have
/// been written by the client itself). When every entry is a trusted proxy, the leftmost is
/// used. `header_values` are the header's occurrences in order (a repeated header reads as one
/// comma-joined list, RFC 9110 §5.3). An entry may carry a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`).
pub fn client_ip<'v>(
    peer: IpAddr,
    header_values: impl IntoIterator<Item = &'v str>,
    config: &ClientIpConfig,
) -> Result<IpAddr, ClientIpError> {
    let peer = peer.to_canonical();
    if config.header.is_none() || !is_trusted(peer, config) {
        return Ok(peer);
    }
    let mut entries: Vec<&str> = Vec::new();
    for value in header_values {
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if entries.len() == CLIENT_IP_HEADER_ENTRIES_MAX {
                return Err(ClientIpError::TooManyEntries {
                    max: CLIENT_IP_HEADER_ENTRIES_MAX,
                });
            }
            entries.push(entry);
        }
    }
    let mut client = peer;
    for (index, entry) in entries.iter().rev().enumerate() {
        let ip = parse_entry(entry).ok_or(ClientIpError::Malformed { index })?;
        client = ip;
        if !is_trusted(ip, config) {
            break;
        }
    }
    Ok(client)
}

fn is_trusted(ip: IpAddr, config: &ClientIpConfig) -> bool {
    config.trusted_proxies.iter().any(|cidr| cidr.contains(ip))
}

fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_platform_table() {
        let cases: &[(&str, Option<DevicePlatform>)] = &[
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
                Some(DevicePlatform::Ios),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X)",
                Some(DevicePlatform::Ios),
            ),
            (
                "MyApp/2.1 iOS/17.4 CFNetwork/1490",
                Some(DevicePlatform::Ios),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124",
                Some(DevicePlatform::Android),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124",
                Some(DevicePlatform::Windows),
            ),
            (
                "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950)",
                Some(DevicePlatform::WindowsPhone),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15",
                Some(DevicePlatform::MacOs),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
                Some(DevicePlatform::Linux),
            ),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) Chrome/124", None),
            ("curl/8.5.0", None),
            ("", None),
        ];
        for (ua, want) in cases {
            assert_eq!(DevicePlatform::from_user_agent(ua), *want, "{ua}");
        }
    }

    #[test]
    fn user_agent_is_scanned_only_up_to_the_limit() {
        let ua = format!("{}Windows", "é".repeat(USER_AGENT_BYTES_SCANNED));
        assert_eq!(DevicePlatform::from_user_agent(&ua), None);
        let ua = format!("Windows{}", "x".repeat(10 * USER_AGENT_BYTES_SCANNED));
        assert_eq!(
            DevicePlatform::from_user_agent(&ua),
            Some(DevicePlatform::Windows)
        );
    }

    #[test]
    fn platform_names_round_trip_case_insensitively() {
        for name in [
            "android",
            "iOS",
            "windows",
            "windowsPhone",
            "macOS",
            "linux",
        ] {
            let p = DevicePlatform::from_name(name).unwrap();
            assert_eq!(p.graph_name(), name);
            assert_eq!(DevicePlatform::from_name(&name.to_uppercase()), Some(p));
        }
        assert_eq!(DevicePlatform::from_name("tizen"), None);
    }

    fn config(header: Option<&str>, proxies: &[&str]) -> ClientIpConfig {
        ClientIpConfig {
            trusted_proxies: proxies.iter().map(|p| Cidr::parse(p).unwrap()).collect(),
            header: header.map(str::to_owned),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn client_ip_table() {
        let xff = Some("x-forwarded-for");
        let proxies = ["10.0.0.0/8", "2001:db8:ff::/48"];
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            &'a [&'a str],
            &'a [&'a str],
            &'a str,
        );
        let cases: &[Case<'_>] = &[
            // (what, header, proxies, header values, expected)
            (
                "no header configured",
                None,
                &proxies,
                &["198.51.100.7"],
                "10.0.0.1",
            ),
            (
                "untrusted peer's header is ignored",
                xff,
                &[],
                &["198.51.100.7"],
                "10.0.0.1",
            ),
            (
                "trusted peer, one entry",
                xff,
                &proxies,
                &["198.51.100.7"],
                "198.51.100.7",
            ),
            (
                "client-forged left entries are skipped",
                xff,
                &proxies,
                &["1.2.3.4, 198.51.100.7"],
                "198.51.100.7",
            ),
            (
                "trusted hops on the right are skipped",
                xff,
                &proxies,
                &["198.51.100.7, 10.1.1.1", "10.2.2.2"],
                "198.51.100.7",
            ),
            (
                "all trusted: leftmost",
                xff,
                &proxies,
                &["10.3.3.3, 10.1.1.1"],
                "10.3.3.3",
            ),
            ("absent header: the peer", xff, &proxies, &[], "10.0.0.1"),
            (
                "port is dropped",
                xff,
                &proxies,
                &["198.51.100.7:5555"],
                "198.51.100.7",
            ),
            (
                "ipv6 with port",
                xff,
                &proxies,
                &["[2001:db8::7]:443"],
                "2001:db8::7",
            ),
            (
                "ipv4-mapped is canonical",
                xff,
                &proxies,
                &["::ffff:198.51.100.7"],
                "198.51.100.7",
            ),
        ];
        for (what, header, proxies, values, want) in cases {
            let got = client_ip(
                ip("::ffff:10.0.0.1"),
                values.iter().copied(),
                &config(*header, proxies),
            );
            assert_eq!(got, Ok(ip(want)), "{what}");
        }
    }

    #[test]
    fn client_ip_refuses_malformed_and_oversized_headers() {
        let c = config(Some("x-forwarded-for"), &["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_ip(peer, ["198.51.100.7, garbage"], &c),
            Err(ClientIpError::Malformed { index: 0 })
        );
        // A malformed entry left of the client is never read.
        assert_eq!(
            client_ip(peer, ["garbage, 198.51.100.7"], &c),
            Ok(ip("198.51.100.7"))
        );
        let long = vec!["10.9.9.9"; CLIENT_IP_HEADER_ENTRIES_MAX + 1].join(",");
        assert_eq!(
            client_ip(peer, [long.as_str()], &c),
            Err(ClientIpError::TooManyEntries {
                max: CLIENT_IP_HEADER_ENTRIES_MAX
            })
        );
    }
}
