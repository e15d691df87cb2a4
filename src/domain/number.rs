//! Whole numbers in JSON bodies. JSON Schema (and so the OpenAPI document)
//! counts `1.0` as an integer; serde's integer types do not. Fields that
//! take a count or a number of seconds deserialize through [`whole`] (and
//! its `Option` forms), which accepts `1` and `1.0` alike and refuses
//! fractions and values out of the field's range.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

struct WholeVisitor<T>(PhantomData<T>);

impl<T: TryFrom<i128>> Visitor<'_> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number in the range of {}", std::any::type_name::<T>())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v.into()).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v.into()).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        let unexpected = || E::invalid_value(de::Unexpected::Float(v), &self);
        if v.fract() != 0.0 || !v.is_finite() || v.abs() > 1e30 {
            return Err(unexpected());
        }
        T::try_from(v as i128).map_err(|_| unexpected())
    }
}

/// A whole number (`7` or `7.0`) in `T`'s range.
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(WholeVisitor(PhantomData))
}

struct Whole<T>(T);

impl<'de, T: TryFrom<i128>> serde::Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        whole(d).map(Whole)
    }
}

/// `null` or a whole number.
pub fn opt_whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(<Option<Whole<T>> as serde::Deserialize>::deserialize(d)?.map(|w| w.0))
}

/// For PATCH fields (with `#[serde(default)]`): absent is `None`, `null` is
/// `Some(None)`.
pub fn patch_whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    opt_whole(d).map(Some)
}

/// A list of whole numbers.
pub fn whole_list<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(<Vec<Whole<T>> as serde::Deserialize>::deserialize(d)?.into_iter().map(|w| w.0).collect())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde(default, deserialize_with = "opt_whole")]
        rate: Option<u16>,
        #[serde(default, deserialize_with = "whole_list")]
        schedule: Vec<u64>,
    }

    fn parse(s: &str) -> Result<Body, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_integers() {
        assert_eq!(
            parse(r#"{"rate": 1.0, "schedule": [5, 300.0]}"#).unwrap(),
            Body { rate: Some(1), schedule: vec![5, 300] }
        );
        assert_eq!(parse(r#"{"rate": null}"#).unwrap().rate, None);
        assert_eq!(parse(r#"{}"#).unwrap(), Body { rate: None, schedule: vec![] });
    }

    #[test]
    fn fractions_and_out_of_range_values_are_refused() {
        for bad in [
            r#"{"rate": 1.5}"#,
            r#"{"rate": 65536}"#,
            r#"{"rate": -1}"#,
            r#"{"rate": 1e300}"#,
            r#"{"schedule": [-1.0]}"#,
            r#"{"rate": "1"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
