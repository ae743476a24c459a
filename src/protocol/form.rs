//! Strict `application/x-www-form-urlencoded` parsing for OAuth request bodies.
//!
//! Stricter than a browser's parser on purpose: RFC 6749 §3.1 and §3.2 say parameters sent
//! without a value are treated as omitted and that no parameter may appear twice, and an
//! invalid percent-escape or non-UTF-8 byte is an error rather than something to guess at.
//! Values borrow from the body unless they contain escapes, so a typical token request parses
//! without allocating more than its field list.

use std::borrow::Cow;

use crate::limits;

/// Why a form body was refused. Names are echoed (sanitized) in error descriptions; values
/// never are, since they may be credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// More parameters than `limits::FORM_FIELDS_MAX`.
    #[error("more than {max} parameters")]
    TooManyFields {
        /// The limit.
        max: usize,
    },
    /// A parameter name longer than `limits::FORM_NAME_BYTES_MAX`.
    #[error("a parameter name is longer than {max} bytes")]
    NameTooLong {
        /// The limit.
        max: usize,
    },
    /// A parameter value longer than `limits::FORM_VALUE_BYTES_MAX`.
    #[error("parameter {name} is longer than {max} bytes")]
    ValueTooLong {
        /// The parameter.
        name: String,
        /// The limit.
        max: usize,
    },
    /// A bad percent-escape, or bytes that are not UTF-8 once decoded.
    #[error("parameter {name} is not valid form encoding")]
    BadEncoding {
        /// The parameter (or `<name>` when the name itself is bad).
        name: String,
    },
    /// A parameter that may appear once appeared more than once (RFC 6749 §3.2).
    #[error("parameter {name} is repeated")]
    Repeated {
        /// The parameter.
        name: String,
    },
}

/// A parsed form: each parameter with a non-empty value, in order.
#[derive(Debug, Default)]
pub struct Form<'a> {
    fields: Fields<'a>,
}

/// Name and value of each parameter, in order.
type Fields<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

impl<'a> Form<'a> {
    /// Parses `body`. Parameters named in `repeatable` may appear more than once (RFC 8707
    /// `resource`); any other repeat is an error.
    ///
    /// Every token request passes here, so a UTF-8 body (every well-formed one) is read in one
    /// pass: each byte is looked at once to find the pair's end, its `=` and whether either
    /// side has escapes to decode; a plain component is then a slice of the body, already
    /// known to be UTF-8. A body that is not UTF-8 takes the component-by-component path,
    /// which reports the same error for it as it always did.
    pub fn parse(body: &'a [u8], repeatable: &[&str]) -> Result<Self, FormError> {
        let mut fields = Vec::new();
        let Ok(text) = std::str::from_utf8(body) else {
            for pair in body.split(|&b| b == b'&') {
                let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
                    Some(i) => (
                        pair.get(..i).unwrap_or_default(),
                        pair.get(i + 1..).unwrap_or_default(),
                    ),
                    None => (pair, &[][..]),
                };
                add(&mut fields, repeatable, decode(raw_name), || {
                    decode(raw_value)
                })?;
            }
            return Ok(Self { fields });
        };
        let bytes = text.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let mut end = start;
            let mut eq = None;
            let mut name_escaped = false;
            let mut value_escaped = false;
            while let Some(&b) = bytes.get(end) {
                match CLASS.get(usize::from(b)).copied().unwrap_or(PLAIN) {
                    PLAIN => {}
                    AMP => break,
                    EQ if eq.is_none() => eq = Some(end),
                    // A second `=` belongs to the value, as a plain byte.
                    EQ => {}
                    _ if eq.is_none() => name_escaped = true,
                    _ => value_escaped = true,
                }
                end += 1;
            }
            // Split at ASCII bytes of a UTF-8 text: every piece is UTF-8 too.
            let (raw_name, raw_value) = match eq {
                Some(i) => (
                    text.get(start..i).unwrap_or_default(),
                    text.get(i + 1..end).unwrap_or_default(),
                ),
                None => (text.get(start..end).unwrap_or_default(), ""),
            };
            start = end + 1;
            if raw_name.is_empty() && raw_value.is_empty() {
                continue;
            }
            let component = |raw: &'a str, escaped: bool| {
                if escaped {
                    decode_escaped(raw.as_bytes())
                } else {
                    Some(Cow::Borrowed(raw))
                }
            };
            add(
                &mut fields,
                repeatable,
                component(raw_name, name_escaped),
                || component(raw_value, value_escaped),
            )?;
        }
        Ok(Self { fields })
    }

    /// The value of a parameter that may appear once.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Every value of a repeatable parameter, in order.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Every parameter, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// Number of parameters with a value.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether no parameter had a value.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Byte classes of the one-pass scan in [`Form::parse`].
const PLAIN: u8 = 0;
const AMP: u8 = 1;
const EQ: u8 = 2;
const ESCAPE: u8 = 3;

/// The class of every byte: `&` ends a pair, the first `=` ends its name, `%` and `+` mean
/// the component needs decoding; everything else is copied as is.
// INVARIANT: the indexing below runs in const evaluation only (a `u8` index into 256 entries):
// out of range would fail the build, never a server.
#[allow(clippy::indexing_slicing)]
static CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    t[b'&' as usize] = AMP;
    t[b'=' as usize] = EQ;
    t[b'%' as usize] = ESCAPE;
    t[b'+' as usize] = ESCAPE;
    t
};

/// Adds one decoded pair to `fields`, or refuses the form. The checks run in a fixed order
/// (name encoding, name length, value encoding, value length), so both paths of
/// [`Form::parse`] refuse a form for the same reason.
fn add<'a>(
    fields: &mut Fields<'a>,
    repeatable: &[&str],
    name: Option<Cow<'a, str>>,
    value: impl FnOnce() -> Option<Cow<'a, str>>,
) -> Result<(), FormError> {
    let name = name.ok_or_else(|| FormError::BadEncoding {
        name: "<name>".to_string(),
    })?;
    if name.len() > limits::FORM_NAME_BYTES_MAX {
        return Err(FormError::NameTooLong {
            max: limits::FORM_NAME_BYTES_MAX,
        });
    }
    let value = value().ok_or_else(|| FormError::BadEncoding {
        name: name.to_string(),
    })?;
    if value.len() > limits::FORM_VALUE_BYTES_MAX {
        return Err(FormError::ValueTooLong {
            name: name.into_owned(),
            max: limits::FORM_VALUE_BYTES_MAX,
        });
    }
    // RFC 6749 §3.1: a parameter without a value is as if it were omitted.
    if value.is_empty() || name.is_empty() {
        return Ok(());
    }
    if fields.len() >= limits::FORM_FIELDS_MAX {
        return Err(FormError::TooManyFields {
            max: limits::FORM_FIELDS_MAX,
        });
    }
    if !repeatable.contains(&name.as_ref()) && fields.iter().any(|(n, _)| *n == name) {
        return Err(FormError::Repeated {
            name: name.into_owned(),
        });
    }
    fields.push((name, value));
    Ok(())
}

/// Decodes one form component: `+` is a space, `%XX` a byte; the result must be UTF-8.
/// Borrows when there is nothing to decode.
pub(crate) fn decode(raw: &[u8]) -> Option<Cow<'_, str>> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    decode_escaped(raw)
}

/// [`decode`] for a component known to hold a `%` or `+`: always a new string.
fn decode_escaped(raw: &[u8]) -> Option<Cow<'static, str>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex)?;
                let lo = raw.get(i + 2).copied().and_then(hex)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_decodes_escapes_and_plus() {
        let form = Form::parse(
            b"grant_type=refresh_token&scope=openid+profile%20email&x=%C3%A9",
            &[],
        )
        .unwrap();
        assert_eq!(form.get("grant_type"), Some("refresh_token"));
        assert_eq!(form.get("scope"), Some("openid profile email"));
        assert_eq!(form.get("x"), Some("é"));
        assert_eq!(form.get("missing"), None);
        assert_eq!(form.len(), 3);
    }

    #[test]
    fn plain_values_are_borrowed_not_copied() {
        let body = b"a=plain&b=esc%41";
        let form = Form::parse(body, &[]).unwrap();
        assert!(matches!(form.fields[0].1, Cow::Borrowed(_)));
        assert!(matches!(form.fields[1].1, Cow::Owned(_)));
    }

    #[test]
    fn empty_values_and_segments_count_as_omitted() {
        let form = Form::parse(b"&scope=&a=1&&flag&=x&scope=openid", &[]).unwrap();
        assert_eq!(form.get("scope"), Some("openid"));
        assert_eq!(form.get("flag"), None);
        assert_eq!(form.len(), 2);
    }

    #[test]
    fn repeated_parameter_is_refused_unless_repeatable() {
        assert_eq!(
            Form::parse(b"scope=a&scope=b", &[]).unwrap_err(),
            FormError::Repeated {
                name: "scope".into()
            }
        );
        // An encoded name is the same name.
        assert!(matches!(
            Form::parse(b"scope=a&sc%6Fpe=b", &[]),
            Err(FormError::Repeated { .. })
        ));
        let form = Form::parse(b"resource=https://a&resource=https://b", &["resource"]).unwrap();
        assert_eq!(
            form.get_all("resource").collect::<Vec<_>>(),
            ["https://a", "https://b"]
        );
    }

    #[test]
    fn bad_escapes_and_non_utf8_are_refused() {
        for body in [
            &b"a=%"[..],
            b"a=%4",
            b"a=%zz",
            b"a=%FF",
            b"a=\xff",
            b"%zz=1",
        ] {
            assert!(
                matches!(Form::parse(body, &[]), Err(FormError::BadEncoding { .. })),
                "accepted {body:?}"
            );
        }
    }

    #[test]
    fn limits_on_count_and_lengths_hold() {
        let many: String = (0..=limits::FORM_FIELDS_MAX)
            .map(|i| format!("p{i}=v&"))
            .collect();
        assert_eq!(
            Form::parse(many.as_bytes(), &[]).unwrap_err(),
            FormError::TooManyFields {
                max: limits::FORM_FIELDS_MAX
            }
        );
        let long_name = format!("{}=v", "n".repeat(limits::FORM_NAME_BYTES_MAX + 1));
        assert!(matches!(
            Form::parse(long_name.as_bytes(), &[]),
            Err(FormError::NameTooLong { .. })
        ));
        let long_value = format!("v={}", "x".repeat(limits::FORM_VALUE_BYTES_MAX + 1));
        assert!(matches!(
            Form::parse(long_value.as_bytes(), &[]),
            Err(FormError::ValueTooLong { .. })
        ));
        let ok_value = format!("v={}", "x".repeat(limits::FORM_VALUE_BYTES_MAX));
        assert!(Form::parse(ok_value.as_bytes(), &[]).is_ok());
    }

    #[test]
    fn error_messages_never_contain_values() {
        let err = Form::parse(b"refresh_token=SECRETVALUE&refresh_token=OTHER", &[]).unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
        let err = Form::parse(b"refresh_token=SECRET%zz", &[]).unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
    }

    /// The parser before the one-pass scan (four passes per component), kept as the reference
    /// the one-pass parser must agree with, refusals included.
    fn reference_parse<'a>(body: &'a [u8], repeatable: &[&str]) -> Result<Fields<'a>, FormError> {
        let mut fields = Vec::new();
        for pair in body.split(|&b| b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            add(&mut fields, repeatable, decode(raw_name), || {
                decode(raw_value)
            })?;
        }
        Ok(fields)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4_000))]

        #[test]
        fn one_pass_parse_agrees_with_the_reference(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"&"[..], b"=", b"%", b"+", b"%41", b"%C3%A9", b"%zz", b"%FF", b"a", b"b",
                    b"scope", b"resource", "\u{e9}".as_bytes(), b"\xff", b"\xc3",
                ]),
                0..24,
            )
        ) {
            let body: Vec<u8> = pieces.concat();
            let ours = Form::parse(&body, &["resource"]).map(|f| f.fields);
            proptest::prop_assert_eq!(ours, reference_parse(&body, &["resource"]));
        }
    }
}
