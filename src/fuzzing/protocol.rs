//! Fuzz entry point for HTTP Basic client authentication (RFC 6749 §2.3.1): the token
//! endpoint's `Authorization` header to a client id and secret, percent-decoded. The first
//! byte picks the mode: even, the rest is the header value as a client sends it; odd, the rest
//! is `id "\n" secret` in the clear, which the target encodes as a conforming client would, so
//! inputs check the decoder against the encoder on every string the fuzzer finds.

use base64::Engine as _;

use crate::limits::CLIENT_CREDENTIAL_BYTES_MAX;
use crate::protocol::{
    BasicCredentials, ClientAuth, Form, REPEATABLE, TokenRequest, parse_basic_auth,
};

/// Form-encodes `value` (`application/x-www-form-urlencoded`, as RFC 6749 Appendix B asks of
/// Basic credentials): unreserved bytes as they are, space as `+`, everything else `%XX`.
pub(crate) fn form_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                for nibble in [b >> 4, b & 0x0f] {
                    out.push(HEX.get(usize::from(nibble)).map_or('0', |&h| char::from(h)));
                }
            }
        }
    }
}

/// The `Authorization` value a conforming client sends for `client_id` and `secret`.
pub(crate) fn basic_header(client_id: &str, secret: &str) -> String {
    let mut pair = String::new();
    form_encode(client_id, &mut pair);
    pair.push(':');
    form_encode(secret, &mut pair);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// One `Authorization` header (see the module documentation for the mode byte).
pub fn basic_auth(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        encoded_credentials(rest);
    } else {
        header_value(rest);
    }
}

/// A header as sent: whatever parses re-encodes to a header that parses to the same
/// credentials; the scheme's case does not matter; and the token request parser agrees with
/// this one, accepting the same credentials and refusing with the same error.
fn header_value(header: &[u8]) {
    let parsed = parse_basic_auth(header);
    if let Ok(c) = &parsed {
        assert!(!c.client_id.is_empty(), "empty client_id accepted");
        assert!(c.client_id.len() <= CLIENT_CREDENTIAL_BYTES_MAX);
        assert!(c.secret.expose().len() <= CLIENT_CREDENTIAL_BYTES_MAX);
        round_trip(c);
    }
    if let Some(scheme) = header.get(..6) {
        let mut flipped = header.to_vec();
        for (b, s) in flipped.iter_mut().zip(scheme) {
            *b = if s.is_ascii_uppercase() {
                s.to_ascii_lowercase()
            } else {
                s.to_ascii_uppercase()
            };
        }
        assert_eq!(parse_basic_auth(&flipped), parsed, "scheme case matters");
    }
    let Ok(form) = Form::parse(b"grant_type=client_credentials", REPEATABLE) else {
        return;
    };
    let request = TokenRequest::parse(&form, Some(header));
    let agree = match (&request, &parsed) {
        (
            Ok(TokenRequest::ClientCredentials {
                client: ClientAuth::SecretBasic { client_id, secret },
                ..
            }),
            Ok(c),
        ) => *client_id == c.client_id && *secret == c.secret,
        (Err(e), Err(f)) => e == f,
        _ => false,
    };
    assert!(
        agree,
        "token request and Basic parser disagree: {request:?} vs {parsed:?}"
    );
}

/// Credentials in the clear, encoded as a client would: they must parse back exactly when the
/// id is not empty and both fit the credential bound (and the header its bound).
fn encoded_credentials(clear: &[u8]) {
    let Ok(clear) = std::str::from_utf8(clear) else {
        return;
    };
    let (client_id, secret) = clear.split_once('\n').unwrap_or((clear, ""));
    let header = basic_header(client_id, secret);
    let parsed = parse_basic_auth(header.as_bytes());
    let fits = !client_id.is_empty()
        && client_id.len() <= CLIENT_CREDENTIAL_BYTES_MAX
        && secret.len() <= CLIENT_CREDENTIAL_BYTES_MAX
        && header.len() - "Basic ".len() <= 4 * CLIENT_CREDENTIAL_BYTES_MAX;
    match parsed {
        Ok(c) => {
            assert!(fits, "credentials over a bound accepted");
            assert_eq!(c.client_id, client_id);
            assert_eq!(c.secret.expose(), secret);
        }
        Err(e) => assert!(!fits, "conforming credentials refused: {e}"),
    }
}

fn round_trip(c: &BasicCredentials) {
    let header = basic_header(&c.client_id, c.secret.expose());
    // Escaping may make the header longer than the one parsed; only the header bound may
    // refuse it then.
    match parse_basic_auth(header.as_bytes()) {
        Ok(again) => assert_eq!(&again, c, "Basic credentials round trip"),
        Err(e) => assert!(
            header.len() - "Basic ".len() > 4 * CLIENT_CREDENTIAL_BYTES_MAX,
            "re-encoded credentials refused: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry point runs on a few seeds in every `cargo test`, so a broken one is caught
    /// before anyone runs the fuzzer.
    #[test]
    fn entry_point_runs_on_seeds() {
        let seeds: [&[u8]; 10] = [
            b"\x00Basic YTpi",
            b"\x00basic bXklM0FhcHA6cyUyQmNyZXQ=",
            b"\x00Basic !!!",
            b"\x00Basic bm9jb2xvbg==",
            b"\x00Bearer abc",
            b"\x00Basic",
            b"\x01my:app\ns+cr et%:",
            b"\x01\nsecret",
            b"\x01\xff",
            b"",
        ];
        for s in seeds {
            basic_auth(s);
        }
    }

    #[test]
    fn form_encoding_escapes_all_but_unreserved() {
        let mut out = String::new();
        form_encode("a b:c%é~", &mut out);
        assert_eq!(out, "a+b%3Ac%25%C3%A9~");
    }
}
