//! The recorded population of sessions the load is drawn from: one line per session as
//! `backstop seed --tokens-out` writes it, parsed once into ready-to-send request bodies.
//!
//! A line is `client_id refresh_token resource`, then optional `key:value` fields in any
//! order: `dpop:<base64url of a 32-byte Ed25519 private seed>` for a DPoP-bound session (a
//! fresh proof is built per request) and `class:<name>` (a label of the load tool's own, so a
//! mixed population's results are broken down per class: hits, revoked, ...). A line that does
//! not parse is refused with its line number and the field at fault; tokens never appear in
//! an error message.

use base64::Engine as _;
use bytes::Bytes;

/// A line that could not be parsed: its 1-based number and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the file.
    pub line: usize,
    /// What is wrong with it (never the token itself).
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for LineError {}

/// One session of the population, ready to send.
pub struct Session {
    /// The form body: `grant_type=refresh_token&client_id=..&refresh_token=..&resource=..`.
    pub body: Bytes,
    /// The Ed25519 key the session is bound to (RFC 9449), if any (boxed: a key is ~250 bytes
    /// and most sessions of a large population have none).
    pub dpop: Option<Box<crate::dpop::Prover>>,
    /// Index into [`Population::classes`].
    pub class: usize,
}

/// The parsed population.
pub struct Population {
    /// Sessions in file order (requests go round robin over them).
    pub sessions: Vec<Session>,
    /// Class names in order of first appearance; `""` for lines without `class:`.
    pub classes: Vec<String>,
}

impl Population {
    /// Sessions bound to a DPoP key.
    pub fn dpop_count(&self) -> usize {
        self.sessions.iter().filter(|s| s.dpop.is_some()).count()
    }
}

/// Parses a population file's contents. Blank lines and lines starting with `#` are skipped.
pub fn parse(text: &str) -> Result<Population, LineError> {
    let mut population = Population {
        sessions: Vec::new(),
        classes: Vec::new(),
    };
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |reason: String| LineError { line, reason };
        let mut fields = trimmed.split_ascii_whitespace();
        let (Some(client_id), Some(refresh_token), Some(resource)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(err(
                "expected `client_id refresh_token resource [dpop:KEY] [class:NAME]`: fewer than 3 fields"
                    .into(),
            ));
        };
        let mut dpop = None;
        let mut class = None;
        for (position, extra) in fields.enumerate() {
            let field_number = position + 4;
            if let Some(key) = extra.strip_prefix("dpop:") {
                if dpop.is_some() {
                    return Err(err("`dpop:` given twice".into()));
                }
                dpop = Some(
                    parse_dpop_key(key)
                        .map(|key| Box::new(crate::dpop::Prover::new(key)))
                        .map_err(|e| err(format!("field {field_number} (dpop): {e}")))?,
                );
            } else if let Some(name) = extra.strip_prefix("class:") {
                if class.is_some() {
                    return Err(err("`class:` given twice".into()));
                }
                if name.is_empty() {
                    return Err(err(format!("field {field_number} (class): empty name")));
                }
                class = Some(name);
            } else {
                return Err(err(format!(
                    "field {field_number}: expected `dpop:KEY` or `class:NAME`"
                )));
            }
        }
        let class_name = class.unwrap_or("");
        let class = match population.classes.iter().position(|c| c == class_name) {
            Some(i) => i,
            None => {
                population.classes.push(class_name.to_string());
                population.classes.len() - 1
            }
        };
        population.sessions.push(Session {
            body: refresh_body(client_id, refresh_token, resource),
            dpop,
            class,
        });
    }
    if population.sessions.is_empty() {
        return Err(LineError {
            line: 0,
            reason: "no sessions in the population file".into(),
        });
    }
    Ok(population)
}

fn parse_dpop_key(text: &str) -> Result<ed25519_dalek::SigningKey, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("not base64url: {e}"))?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("an Ed25519 seed is 32 bytes, this one is {}", bytes.len()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The refresh grant's form body (`application/x-www-form-urlencoded`).
pub fn refresh_body(client_id: &str, refresh_token: &str, resource: &str) -> Bytes {
    let mut body =
        String::with_capacity(64 + client_id.len() + refresh_token.len() + resource.len() * 3);
    body.push_str("grant_type=refresh_token&client_id=");
    form_encode_into(client_id, &mut body);
    body.push_str("&refresh_token=");
    form_encode_into(refresh_token, &mut body);
    body.push_str("&resource=");
    form_encode_into(resource, &mut body);
    Bytes::from(body)
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.2): unreserved bytes as they are, space
/// as `+`, everything else percent-encoded.
pub fn form_encode_into(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(hex_digit(b >> 4));
                out.push(hex_digit(b & 0x0f));
            }
        }
    }
}

fn hex_digit(nibble: u8) -> char {
    match nibble {
        0..=9 => char::from(b'0' + nibble),
        _ => char::from(b'A' + (nibble.min(15) - 10)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn three_field_lines_become_form_bodies_with_the_resource_encoded() {
        let p = parse("seed-app-1 tok123 https://api0.seed.example\n").unwrap();
        assert_eq!(p.sessions.len(), 1);
        assert_eq!(
            &p.sessions[0].body[..],
            b"grant_type=refresh_token&client_id=seed-app-1&refresh_token=tok123&resource=https%3A%2F%2Fapi0.seed.example"
        );
        assert!(p.sessions[0].dpop.is_none());
        assert_eq!(p.classes, vec![String::new()]);
        assert_eq!(p.dpop_count(), 0);
    }

    #[test]
    fn a_dpop_field_yields_the_key_of_that_seed() {
        let p = parse(&format!(
            "app tok res dpop:{SEED_B64}\n# comment\n\napp tok2 res\n"
        ))
        .unwrap();
        assert_eq!(p.sessions.len(), 2);
        let key = p.sessions[0].dpop.as_ref().unwrap();
        let seed: [u8; 32] = core::array::from_fn(|i| i as u8);
        let expected = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        assert_eq!(key.verifying_key(), expected);
        assert_eq!(p.dpop_count(), 1);
    }

    #[test]
    fn classes_are_numbered_in_order_of_first_appearance() {
        let p = parse("a t r class:hit\na t r class:unknown\na t r class:hit\na t r\n").unwrap();
        assert_eq!(p.classes, vec!["hit", "unknown", ""]);
        let classes: Vec<usize> = p.sessions.iter().map(|s| s.class).collect();
        assert_eq!(classes, vec![0, 1, 0, 2]);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number_and_field_and_never_the_token() {
        let cases = [
            ("a b\n", 1, "fewer than 3 fields"),
            ("a b c\nx secret-token\n", 2, "fewer than 3 fields"),
            (
                "a secret-token c dpop:!!!\n",
                1,
                "field 4 (dpop): not base64url",
            ),
            ("a secret-token c dpop:AAEC\n", 1, "32 bytes, this one is 3"),
            (
                "a secret-token c extra\n",
                1,
                "field 4: expected `dpop:KEY` or `class:NAME`",
            ),
            (
                "a secret-token c class:x class:y\n",
                1,
                "`class:` given twice",
            ),
            (
                "a secret-token c class:\n",
                1,
                "field 4 (class): empty name",
            ),
            ("# only a comment\n", 0, "no sessions"),
        ];
        for (text, line, reason) in cases {
            let e = parse(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} parsed"));
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(reason), "{text:?}: {e}");
            assert!(!e.to_string().contains("secret-token"), "{e}");
        }
    }

    #[test]
    fn form_encoding_escapes_reserved_and_non_ascii_bytes() {
        let mut out = String::new();
        form_encode_into("a b&c=d/é~+", &mut out);
        assert_eq!(out, "a+b%26c%3Dd%2F%C3%A9%7E%2B");
    }
}
