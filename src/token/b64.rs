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

/// Appends the base64url encoding of `bytes` to `out`. Reuses `out`'s capacity: the minting path
/// calls this with a buffer it keeps, so steady state allocates nothing.
pub fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + encoded_len(bytes.len()), 0);
    if let Some(tail) = out.get_mut(start..) {
        // INVARIANT: `tail` is exactly encoded_len(bytes.len()) long, which encode_slice needs;
        // an error is impossible, and would leave zero bytes that no verifier accepts.
        let written = URL_SAFE_NO_PAD.encode_slice(bytes, tail).unwrap_or(0);
        debug_assert_eq!(written, tail.len());
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
    fn decode_array_refuses_other_lengths() {
        let text = encode(&[7u8; 32]);
        assert_eq!(decode_array::<32>(text.as_bytes(), "x").unwrap(), [7u8; 32]);
        assert!(decode_array::<33>(text.as_bytes(), "x").is_err());
        assert!(decode_array::<31>(text.as_bytes(), "x").is_err());
    }
}
