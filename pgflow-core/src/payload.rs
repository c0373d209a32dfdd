//! [`Payload`]: a claimed message's JSON payload, kept as the text the
//! database returned and parsed only when asked.
//!
//! A claim of 100 messages used to build 100 `serde_json::Value` trees (a
//! map and a string allocation per key) that most consumers immediately
//! decoded again into their own type, or never looked at. A `Payload` is
//! one allocation holding valid JSON text; [`Payload::decode`] parses it
//! once, straight into the type asked for.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::error::Result;

/// A message's JSON payload: valid JSON text as the claim returned it
/// (`jsonb`'s normalized text for a message stored as a row, the producer's
/// own text for one claimed from a batch; compare with `==`, which ignores
/// the difference, not with [`Payload::get`]).
#[derive(Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The payload of `value`.
    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        Ok(Self(serde_json::value::to_raw_value(value)?))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Decodes the payload as `T` (one parse, no intermediate tree).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(self.0.get())?)
    }

    /// The payload as a `serde_json::Value` (parsed on each call).
    pub fn to_value(&self) -> Result<serde_json::Value> {
        self.decode()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// Equal when both parse to the same JSON value (key order and spacing
/// aside).
impl PartialEq<serde_json::Value> for Payload {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.to_value().is_ok_and(|v| &v == other)
    }
}

impl PartialEq<Payload> for serde_json::Value {
    fn eq(&self, other: &Payload) -> bool {
        other == self
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.get() == other.get() || other.to_value().is_ok_and(|v| self == &v)
    }
}

/// Serialized as the JSON it holds (not as a string) by serde_json's
/// serializers (`to_string`, `to_value`, `json!`); other formats see
/// serde_json's `RawValue` wrapper.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Type<Postgres> for Payload {
    fn type_info() -> PgTypeInfo {
        <&RawValue as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&RawValue as Type<Postgres>>::compatible(ty)
    }
}

/// Read from a `json` or `jsonb` column (the server sends valid JSON; the
/// text is checked once more, without building a tree).
impl<'r> Decode<'r, Postgres> for Payload {
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let raw = <&RawValue as Decode<Postgres>>::decode(value)?;
        Ok(Self(raw.to_owned()))
    }
}

/// Bound as `jsonb`.
impl Encode<'_, Postgres> for Payload {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> std::result::Result<IsNull, BoxDynError> {
        sqlx::types::Json(&*self.0).encode_by_ref(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_compares_and_serializes_as_the_json_it_holds() {
        let v = json!({"n": 1, "s": "x"});
        let p = Payload::from_value(&v).unwrap();
        assert_eq!(p, v);
        assert_eq!(v, p);
        assert_eq!(p.to_value().unwrap()["n"], 1);
        #[derive(serde::Deserialize)]
        struct N {
            n: i64,
        }
        assert_eq!(p.decode::<N>().unwrap().n, 1);
        assert_eq!(
            serde_json::to_value(json!({ "payload": p })).unwrap(),
            json!({"payload": {"n": 1, "s": "x"}})
        );
        let spaced: Box<RawValue> = serde_json::from_str(r#"{"s": "x", "n": 1}"#).unwrap();
        assert_eq!(p, Payload(spaced));
        assert!(p.decode::<Vec<i64>>().is_err());
    }
}
