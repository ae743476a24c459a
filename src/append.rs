//! Appending JSON numbers and strings to byte buffers by hand: the minting path writes every
//! token's time claims and every token response's strings, and the audit writer every record,
//! and `core::fmt` or a byte-at-a-time escape scan cost more there than the rest of the
//! assembly. A leaf: it uses nothing of ours, so every floor may use it (`audit` included).

/// Appends `v` in decimal, as `{v}` would format it.
#[inline(always)]
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            // `v % 10` < 10: the cast cannot truncate.
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || at == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

/// Appends `s` escaped for the inside of a JSON string, no quotes (RFC 8259 §7: `"`, `\` and
/// control characters; the latter as `\u00XX`). Callers pass `str` bytes or ASCII, so the
/// output is UTF-8 whenever the input is.
pub fn json_escape(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s;
    // Runs that need no escape (all of a base64url token) are found eight bytes at a time and
    // copied in one go.
    while let Some(i) = escape_at(rest) {
        let (run, tail) = rest.split_at(i);
        out.extend_from_slice(run);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => {
                out.extend_from_slice(b"\\u00");
                // b < 0x20: both nibbles index the table.
                out.extend(
                    [b >> 4, b & 0x0f]
                        .iter()
                        .filter_map(|n| HEX.get(usize::from(*n))),
                );
            }
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
}

/// The index of the first byte of `s` that JSON must escape (`"`, `\` or below 0x20).
///
/// Eight bytes per step with the classic zero-byte test: for a word `v`, `(v - 0x01..01) & !v &
/// 0x80..80` flags every byte of `v` that is zero, and may also flag bytes *above* the lowest
/// flagged one (a borrow), never below it; likewise `(x - 0x20..20) & !x & 0x80..80` for bytes
/// below 0x20. The lowest flag of the three tests together is therefore always a true match,
/// and the bytes are loaded little-endian so that the lowest flag is the first byte.
pub fn escape_at(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_u64_writes_what_display_writes() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            1_764_892_800,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, v);
            assert_eq!(out, format!("x{v}").into_bytes());
        }
    }

    #[test]
    fn json_escape_matches_serde_json_inside_the_quotes() {
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "\u{0}\u{1f}\n\t\r\u{8}\u{c}",
            "exactly8",
            "0123456789abcdef\"0123456789\\",
            "é and ✓ stay as they are",
        ] {
            let mut out = Vec::new();
            json_escape(&mut out, s.as_bytes());
            let quoted = serde_json::to_string(s).unwrap();
            // serde_json uses the short forms (`\n`, ...) where JSON has them; we write `\u00XX`,
            // which means the same: compare what both decode to.
            let ours: String = serde_json::from_slice(&[b"\"", &out[..], b"\""].concat()).unwrap();
            assert_eq!(ours, s, "{quoted}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4_000))]

        #[test]
        fn escape_at_finds_the_first_byte_to_escape(
            s in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'"', b'\\', 0u8, 0x1f, 0x20, 0x7f, 0x80, 0xa2, 0xdc, 0xff]),
                0..40,
            )
        ) {
            let expected = s.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            proptest::prop_assert_eq!(escape_at(&s), expected);
        }
    }
}
