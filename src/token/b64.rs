//! Strict base64url without padding (RFC 7515 §2): the only encoding JOSE segments use.
//!
//! Decoding refuses padding, the standard alphabet's `+` and `/`, whitespace and non-canonical
//! trailing bits, so one token has exactly one encoding (a second spelling of the same bytes
//! would defeat replay caches keyed on the text).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A base64url segment that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64url (unpadded, URL-safe alphabet, canonical) in {field}")]
pub struct B64Error {
    /// Which field held the bad text.
    pub field: &'static str,
}

/// Decodes `text` as strict base64url; `field` names it in the error.
pub fn decode(text: &[u8], field: &'static str) -> Result<Vec<u8>, B64Error> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| B64Error { field })
}

/// Decodes into a fixed-size array, refusing any other length.
pub fn decode_array<const N: usize>(text: &[u8], field: &'static str) -> Result<[u8; N], B64Error> {
    let mut out = [0u8; N];
    // decode_slice checks the output fits; we then insist it filled the array exactly.
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(n) if n == N => Ok(out),
        _ => Err(B64Error { field }),
    }
}

/// Encoded length of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// The base64url alphabet (RFC 4648 §5).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The two characters of every 12-bit value: three input bytes become four characters with
/// two lookups (8 KiB, built at compile time).
// INVARIANT: the indexing below runs in const evaluation only: an index out of range would
// fail the build, never a server (`.get` is not usable in a const initializer loop here).
#[allow(clippy::indexing_slicing)]
static PAIRS: [[u8; 2]; 4096] = {
    let mut t = [[0u8; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = [ALPHABET[i >> 6], ALPHABET[i & 63]];
        i += 1;
    }
    t
};

fn pair(v: u32) -> [u8; 2] {
    // The mask keeps the index below 4096, so the lookup never falls back.
    PAIRS
        .get((v & 0xfff) as usize)
        .copied()
        .unwrap_or([b'A'; 2])
}

fn char_of(v: u32) -> u8 {
    ALPHABET.get((v & 63) as usize).copied().unwrap_or(b'A')
}

/// Appends the base64url encoding of `bytes` to `out`. Reuses `out`'s capacity: the minting path
/// calls this with a buffer it keeps, so steady state allocates nothing. Every minted token's
/// payload passes through here, so it is hand-rolled for speed and pinned to the `base64`
/// crate's output by tests: six input bytes a step, read as the top of one big-endian word,
/// become eight characters with four lookups of two characters each and one append.
pub fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len(bytes.len()));
    let mut rest = bytes;
    // Eight bytes readable: the last two are only looked at by the next step.
    while let Some((word, _)) = rest.split_first_chunk::<8>() {
        let n = u64::from_be_bytes(*word);
        let chars = u64::from(u16::from_le_bytes(pair((n >> 52) as u32)))
            | u64::from(u16::from_le_bytes(pair((n >> 40) as u32))) << 16
            | u64::from(u16::from_le_bytes(pair((n >> 28) as u32))) << 32
            | u64::from(u16::from_le_bytes(pair((n >> 16) as u32))) << 48;
        out.extend_from_slice(&chars.to_le_bytes());
        rest = rest.get(6..).unwrap_or_default();
    }
    // Fewer than eight bytes left: three at a time, then the one or two of the tail.
    let mut triples = rest.chunks_exact(3);
    for t in &mut triples {
        if let [a, b, c] = t {
            let n = u32::from(*a) << 16 | u32::from(*b) << 8 | u32::from(*c);
            out.extend_from_slice(&pair(n >> 12));
            out.extend_from_slice(&pair(n));
        }
    }
    // One or two bytes left: two or three characters, no padding.
    match triples.remainder() {
        [a] => {
            let n = u32::from(*a) << 16;
            out.extend_from_slice(&[char_of(n >> 18), char_of(n >> 12)]);
        }
        [a, b] => {
            let n = u32::from(*a) << 16 | u32::from(*b) << 8;
            out.extend_from_slice(&[char_of(n >> 18), char_of(n >> 12), char_of(n >> 6)]);
        }
        _ => {}
    }
}

/// The base64url encoding of `bytes` as a `String`.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_padding_std_alphabet_whitespace_and_loose_trailing_bits() {
        assert_eq!(decode(b"YQ", "t").unwrap(), b"a");
        for bad in [&b"YQ=="[..], b"YR", b"a+b/", b"Y Q", b"Y\nQ", b"Y"] {
            assert_eq!(decode(bad, "t"), Err(B64Error { field: "t" }), "{bad:?}");
        }
    }

    #[test]
    fn encode_into_appends_and_matches_encode() {
        let mut out = b"x.".to_vec();
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            out.truncate(2);
            encode_into(&bytes, &mut out);
            assert_eq!(&out[2..], encode(&bytes).as_bytes());
            assert_eq!(decode(&out[2..], "t").unwrap(), bytes);
        }
    }

    #[test]
    fn encode_into_matches_the_base64_crate_on_every_length_and_byte() {
        // Every byte value in every position of a 3-byte group, and lengths around a token's.
        let all: Vec<u8> = (0..=255u8)
            .chain((0..=255u8).rev())
            .chain(0..=255u8)
            .collect();
        let mut x = 0x9e37_79b9_u32;
        let noise: Vec<u8> = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        for input in [&all[..], &noise[..]] {
            for n in 0..input.len().min(1100) {
                let mut ours = Vec::new();
                encode_into(&input[..n], &mut ours);
                assert_eq!(
                    ours,
                    URL_SAFE_NO_PAD.encode(&input[..n]).as_bytes(),
                    "length {n}"
                );
            }
            for start in 0..3 {
                let mut ours = Vec::new();
                encode_into(&input[start..], &mut ours);
                assert_eq!(ours, URL_SAFE_NO_PAD.encode(&input[start..]).as_bytes());
            }
        }
    }

    #[test]
    fn decode_array_refuses_other_lengths() {
        let text = encode(&[7u8; 32]);
        assert_eq!(decode_array::<32>(text.as_bytes(), "x").unwrap(), [7u8; 32]);
        assert!(decode_array::<33>(text.as_bytes(), "x").is_err());
        assert!(decode_array::<31>(text.as_bytes(), "x").is_err());
    }
}
