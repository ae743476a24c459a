//! Strict JSON for JOSE: refuses duplicate member names at any depth and nesting past a bound.
//!
//! RFC 7515 §5.2 lets a parser either reject duplicate header names or take the last one; two
//! parsers that choose differently read two different tokens from the same bytes (one checks the
//! `alg` the other ignores). We reject, everywhere: headers, claims, JWKs.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a JOSE JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, or trailing bytes after the value.
    #[error("malformed JSON in {field}")]
    Syntax {
        /// Which document.
        field: &'static str,
    },
    /// The same member name twice in one object.
    #[error("duplicate member {name:?} in {field}")]
    DuplicateKey {
        /// Which document.
        field: &'static str,
        /// The repeated name.
        name: String,
    },
    /// Deeper than `limits::JOSE_JSON_DEPTH_MAX`.
    #[error("{field} nests deeper than {depth_max} levels")]
    TooDeep {
        /// Which document.
        field: &'static str,
        /// The bound.
        depth_max: usize,
    },
    /// Valid JSON but not an object where one is required.
    #[error("{field} is not a JSON object")]
    NotObject {
        /// Which document.
        field: &'static str,
    },
}

/// What went wrong inside the serde visitor, carried out past serde's stringly error.
#[derive(Debug)]
enum Fault {
    Duplicate(String),
    TooDeep,
}

struct Seed<'f> {
    depth: usize,
    depth_max: usize,
    fault: &'f RefCell<Option<Fault>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed<'_> {
    fn child(&self) -> Self {
        Seed {
            depth: self.depth + 1,
            depth_max: self.depth_max,
            fault: self.fault,
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= self.depth_max {
            *self.fault.borrow_mut() = Some(Fault::TooDeep);
            return Err(E::custom("too deep"));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                *self.fault.borrow_mut() = Some(Fault::Duplicate(name));
                return Err(de::Error::custom("duplicate member"));
            }
            let v = map.next_value_seed(self.child())?;
            members.insert(name, v);
        }
        Ok(Value::Object(members))
    }
}

/// Parses `bytes` as one JSON value, refusing duplicate member names and nesting deeper than
/// `depth_max`. `field` names the document in errors.
pub fn parse(bytes: &[u8], field: &'static str, depth_max: usize) -> Result<Value, JsonError> {
    let fault = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed {
        depth: 0,
        depth_max,
        fault: &fault,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, fault.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(Fault::Duplicate(name))) => Err(JsonError::DuplicateKey { field, name }),
        (Err(_), Some(Fault::TooDeep)) => Err(JsonError::TooDeep { field, depth_max }),
        (Err(_), None) => Err(JsonError::Syntax { field }),
    }
}

/// [`parse`], then insists on an object.
pub fn parse_object(
    bytes: &[u8],
    field: &'static str,
    depth_max: usize,
) -> Result<Map<String, Value>, JsonError> {
    match parse(bytes, field, depth_max)? {
        Value::Object(m) => Ok(m),
        _ => Err(JsonError::NotObject { field }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_member_names_are_refused_at_any_depth() {
        assert_eq!(
            parse(br#"{"alg":"EdDSA","alg":"none"}"#, "header", 8),
            Err(JsonError::DuplicateKey {
                field: "header",
                name: "alg".into()
            })
        );
        assert!(matches!(
            parse(br#"{"cnf":{"jkt":"a","jkt":"b"}}"#, "claims", 8),
            Err(JsonError::DuplicateKey { .. })
        ));
        // The same name in two different objects is fine.
        assert!(parse(br#"{"a":{"x":1},"b":{"x":2}}"#, "claims", 8).is_ok());
    }

    #[test]
    fn nesting_past_the_bound_is_refused() {
        assert!(parse(b"[[[1]]]", "c", 3).is_ok());
        assert_eq!(
            parse(b"[[[[1]]]]", "c", 3),
            Err(JsonError::TooDeep {
                field: "c",
                depth_max: 3
            })
        );
        assert!(matches!(
            parse(br#"{"a":{"b":{"c":{}}}}"#, "c", 3),
            Err(JsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn trailing_bytes_and_non_objects_are_refused() {
        assert_eq!(
            parse(b"{} x", "c", 3),
            Err(JsonError::Syntax { field: "c" })
        );
        assert_eq!(
            parse(b"{\"a\":1", "c", 3),
            Err(JsonError::Syntax { field: "c" })
        );
        assert_eq!(
            parse_object(b"[1]", "c", 3),
            Err(JsonError::NotObject { field: "c" })
        );
    }
}
