//! CIDR ranges of IP named locations (IPv4 and IPv6), parsed and matched by hand: a prefix
//! compare on integers needs no dependency.

use std::net::IpAddr;

/// One `cidrAddress` of an `ipNamedLocation`, with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    /// An IPv4 network and its prefix length (0..=32).
    V4 {
        /// Network address, host bits zero.
        network: u32,
        /// Prefix length in bits.
        prefix_bits: u8,
    },
    /// An IPv6 network and its prefix length (0..=128).
    V6 {
        /// Network address, host bits zero.
        network: u128,
        /// Prefix length in bits.
        prefix_bits: u8,
    },
}

impl Cidr {
    /// Parses `address/prefix`; `None` if either half is malformed or the prefix is too long.
    /// A bare address is not accepted: Graph always writes the prefix.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = text.split_once('/')?;
        // `u8::from_str` accepts a leading `+`; a prefix is digits only.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix_bits: u8 = prefix.parse().ok()?;
        match address.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) if prefix_bits <= 32 => Some(Self::V4 {
                network: u32::from(v4) & mask_v4(prefix_bits),
                prefix_bits,
            }),
            IpAddr::V6(v6) if prefix_bits <= 128 => Some(Self::V6 {
                network: u128::from(v6) & mask_v6(prefix_bits),
                prefix_bits,
            }),
            _ => None,
        }
    }

    /// Whether `ip` is inside this range. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports IPv4 peers) matches as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (
                Self::V4 {
                    network,
                    prefix_bits,
                },
                IpAddr::V4(v4),
            ) => u32::from(v4) & mask_v4(*prefix_bits) == *network,
            (
                Self::V6 {
                    network,
                    prefix_bits,
                },
                IpAddr::V6(v6),
            ) => u128::from(v6) & mask_v6(*prefix_bits) == *network,
            _ => false,
        }
    }
}

fn mask_v4(prefix_bits: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_bits.min(32)))
        .unwrap_or(0)
}

fn mask_v6(prefix_bits: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_bits.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_contains_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.77/24", "192.168.1.1", true),
            ("192.168.1.0/32", "192.168.1.0", true),
            ("192.168.1.0/32", "192.168.1.1", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("203.0.113.0/24", "::ffff:203.0.113.9", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("2001:db8::1/128", "2001:db8::1", true),
            ("::/0", "::1", true),
            ("::/0", "127.0.0.1", false),
        ];
        for (cidr, ip, want) in cases {
            let parsed = Cidr::parse(cidr).unwrap_or_else(|| panic!("{cidr} parses"));
            assert_eq!(parsed.contains(ip.parse().unwrap()), *want, "{cidr} ∋ {ip}");
        }
    }

    #[test]
    fn cidr_rejects_malformed() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0/8",
            "2001:db8::/129",
            "/8",
            "x/8",
            "10.0.0.0/8/8",
            "10.0.0.0/ 8",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
