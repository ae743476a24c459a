//! Fuzz entry point for the request headers Conditional Access reads: the client IP from a
//! trusted proxy's `X-Forwarded-For` (`policy::client_ip`) and the device platform from the
//! `User-Agent` (`DevicePlatform::from_user_agent`). The first byte picks the socket peer (a
//! trusted proxy or not, IPv4, IPv6 or IPv4-mapped); the rest, as UTF-8, is the User-Agent on
//! its first line and one `X-Forwarded-For` occurrence per following line.

use std::net::IpAddr;

use crate::limits::{CLIENT_IP_HEADER_ENTRIES_MAX, USER_AGENT_BYTES_SCANNED};
use crate::policy::{Cidr, ClientIpConfig, ClientIpError, DevicePlatform, client_ip};

/// The peers a fuzzed request may come from: trusted first, then not.
const PEERS: [&str; 6] = [
    "10.0.0.1",
    "2001:db8::1",
    "::ffff:10.9.9.9",
    "198.51.100.7",
    "2001:dc8::1",
    "::ffff:203.0.113.5",
];

fn config() -> ClientIpConfig {
    ClientIpConfig {
        trusted_proxies: ["10.0.0.0/8", "2001:db8::/32"]
            .into_iter()
            .filter_map(Cidr::parse)
            .collect(),
        header: Some("x-forwarded-for".into()),
    }
}

/// One request's headers (see the module documentation for the layout).
pub fn request_facts(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = rest.split('\n');
    let user_agent = lines.next().unwrap_or_default();
    let forwarded: Vec<&str> = lines.collect();
    let peer_text = PEERS
        .get(usize::from(selector) % PEERS.len())
        .copied()
        .unwrap_or("10.0.0.1");
    let Ok(peer) = peer_text.parse::<IpAddr>() else {
        return;
    };
    client_ip_facts(peer, &forwarded);
    platform(user_agent);
}

/// Checks the client IP against what the header says, entry by entry, and that a repeated
/// header reads as its comma-joined list (RFC 9110 §5.3).
fn client_ip_facts(peer: IpAddr, forwarded: &[&str]) {
    let config = config();
    let trusted = |ip: IpAddr| config.trusted_proxies.iter().any(|c| c.contains(ip));
    let result = client_ip(peer, forwarded.iter().copied(), &config);
    let joined = forwarded.join(",");
    assert_eq!(
        client_ip(peer, [joined.as_str()], &config),
        result,
        "a repeated header must read as its joined list"
    );
    let peer = peer.to_canonical();
    if !trusted(peer) {
        assert_eq!(result, Ok(peer), "an untrusted peer is the client");
        return;
    }
    let entries: Vec<&str> = joined
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > CLIENT_IP_HEADER_ENTRIES_MAX {
        assert!(matches!(result, Err(ClientIpError::TooManyEntries { .. })));
        return;
    }
    // The entries as addresses, rightmost first (`None`: not an address).
    let parsed: Vec<Option<IpAddr>> = entries.iter().rev().map(|e| parse_entry(e)).collect();
    match result {
        Ok(ip) => {
            assert_eq!(ip, ip.to_canonical());
            // The client is the first untrusted entry from the right, or the leftmost entry
            // when all are trusted, or the peer when there are none; everything right of it
            // parsed and is trusted.
            let position = parsed
                .iter()
                .position(|p| p.is_none_or(|a| !trusted(a)))
                .unwrap_or(parsed.len().saturating_sub(1));
            let expected = parsed.get(position).copied().flatten().unwrap_or(peer);
            assert_eq!(ip, expected, "client IP is not the first untrusted entry");
            assert!(
                parsed
                    .get(..position)
                    .is_some_and(|right| right.iter().all(|p| p.is_some_and(trusted)))
            );
        }
        Err(ClientIpError::Malformed { index }) => {
            assert_eq!(
                parsed.get(index),
                Some(&None),
                "entry {index} is an address"
            );
            assert!(
                parsed
                    .get(..index)
                    .is_some_and(|right| right.iter().all(|p| p.is_some_and(trusted))),
                "a malformed entry behind an untrusted one was read"
            );
        }
        Err(ClientIpError::TooManyEntries { .. }) => {
            assert!(entries.len() > CLIENT_IP_HEADER_ENTRIES_MAX);
        }
    }
}

/// An entry as an address, with or without a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The platform depends only on the scanned prefix of the User-Agent.
fn platform(user_agent: &str) {
    let found = DevicePlatform::from_user_agent(user_agent);
    if user_agent.len() >= USER_AGENT_BYTES_SCANNED {
        let longer = format!("{user_agent} Windows Phone iPhone Android");
        assert_eq!(DevicePlatform::from_user_agent(&longer), found);
    }
    if let Some(p) = found {
        assert_eq!(DevicePlatform::from_name(p.graph_name()), Some(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry point runs on a few seeds in every `cargo test`, so a broken one is caught
    /// before anyone runs the fuzzer.
    #[test]
    fn entry_point_runs_on_seeds() {
        let long_agent = format!("\x00{}Android", "x".repeat(USER_AGENT_BYTES_SCANNED));
        let seeds: [&[u8]; 9] = [
            b"\x00Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)\n203.0.113.9, 10.1.2.3",
            b"\x01MyApp/1.0\n[2001:db8::5]:443\n192.0.2.1:80, 2001:db8::7",
            b"\x02\n10.0.0.2,10.0.0.3",
            b"\x00\nnot-an-ip, 10.0.0.2",
            b"\x00\n203.0.113.9, not-an-ip",
            b"\x03Windows Phone\nanything, at all",
            b"\x00\n,,, ,",
            long_agent.as_bytes(),
            b"",
        ];
        for s in seeds {
            request_facts(s);
        }
    }
}
