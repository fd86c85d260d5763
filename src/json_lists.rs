//! A JSON body's list counted without building it, so that a list longer than a call may carry
//! is refused before it is read.
//!
//! Why: the JSON routes parse a body into [`serde_json::Value`]s first and build the message from
//! them, so every element of a list becomes a value (and then part of the message) before anything
//! counts them: about 60 bytes of memory for the three bytes of a `{},`. 64 bodies of 350,000
//! empty items, just under the 1 MiB body limit, raised a node's peak RSS from 16 to about 300 MB
//! (`bench/hostile-rss.sh NODE_BIN json-items`; bench/analysis.md). Counted here first, with
//! serde's `IgnoredAny` (the parser checks the syntax and builds nothing), an oversized list is
//! refused with the same answer it always got, for 36 MB.
//!
//! Used by `POST /v1/GetRateLimits` (at most 1000 `requests`) and envoy's `POST /json` (at most
//! 128 `descriptors`, each with at most 32 `entries`). A body the counting cannot read (not UTF-8,
//! not a JSON object, the list not a list) is left to the route's decoder, which says what is wrong.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What [`list_shape`] found in a body's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListShape {
    /// How many elements the list has (`null`: none).
    pub length: usize,
    /// The first element whose inner list is longer than the maximum asked for: its position
    /// and its inner list's length.
    pub crowded: Option<(usize, usize)>,
}

/// The length of the list in the top-level field `name` of the JSON object `body` (its last
/// occurrence, as the decoders read a repeated key), counted without building anything; `None`
/// when the body cannot be read that way.
pub fn list_length(body: &[u8], name: &str) -> Option<usize> {
    list_shape(body, name, None).map(|shape| shape.length)
}

/// As [`list_length`], and with `inner = Some((field, max))`, the first element (an object) whose
/// list in `field` is longer than `max` (envoy's descriptors and their entries).
pub fn list_shape(body: &[u8], name: &str, inner: Option<(&str, usize)>) -> Option<ListShape> {
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let shape = Body { name, inner }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    shape
}

/// The top-level object: finds `name`, skips every other field.
struct Body<'n> {
    name: &'n str,
    inner: Option<(&'n str, usize)>,
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = Option<ListShape>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Option<ListShape>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut shape = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                shape = Some(map.next_value_seed(List { inner: self.inner })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(shape)
    }
}

/// The counted list: a list or `null`, anything else an error (not counted).
struct List<'n> {
    inner: Option<(&'n str, usize)>,
}

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = ListShape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ListShape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = ListShape;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list")
    }

    fn visit_unit<E>(self) -> Result<ListShape, E> {
        Ok(ListShape {
            length: 0,
            crowded: None,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut list: A) -> Result<ListShape, A::Error> {
        let mut shape = ListShape {
            length: 0,
            crowded: None,
        };
        match self.inner {
            Some((field, max)) => {
                while let Some(inner) =
                    list.next_element_seed(InnerLength { field: Some(field) })?
                {
                    if shape.crowded.is_none() && inner.is_some_and(|length| length > max) {
                        shape.crowded = inner.map(|length| (shape.length, length));
                    }
                    shape.length += 1;
                }
            }
            None => {
                while list.next_element::<IgnoredAny>()?.is_some() {
                    shape.length += 1;
                }
            }
        }
        Ok(shape)
    }
}

/// Any JSON value, read through and never refused. With `field: Some(name)` (an element of the
/// counted list): the length of the list in the object's field `name` (its last occurrence),
/// `None` when the value is not an object with a list there. With `field: None` (that field's
/// value): its length when it is a list, else `None` (the decoder names what it is).
struct InnerLength<'n> {
    field: Option<&'n str>,
}

impl<'de> DeserializeSeed<'de> for InnerLength<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InnerLength<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut length = None;
        while let Some(key) = map.next_key::<String>()? {
            if self.field.is_some_and(|field| field == key) {
                length = map.next_value_seed(InnerLength { field: None })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(length)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut list: A) -> Result<Self::Value, A::Error> {
        let mut length = 0;
        while list.next_element::<IgnoredAny>()?.is_some() {
            length += 1;
        }
        Ok(self.field.is_none().then_some(length))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_length_counts_the_last_list_of_that_name_without_reading_it() {
        let cases: [(&str, Option<usize>); 12] = [
            (
                r#"{"requests":[{},{},{"name":"n","metadata":{"a":"b"}}]}"#,
                Some(3),
            ),
            (r#"{"requests":[]}"#, Some(0)),
            (r#"{"requests":null}"#, Some(0)),
            (r#"{"other":[1,2],"requests":[[[]],"x",3]}"#, Some(3)),
            (r#"{"requests":[{}],"requests":[{},{}]}"#, Some(2)),
            (r#" { "requests" : [ {} , {} ] } "#, Some(2)),
            (r#"{"req\u0075ests":[{}]}"#, Some(1)),
            (r#"{"other":[1]}"#, None),
            (r#"{"requests":{}}"#, None),
            (r#"{"requests":[{},"#, None),
            (r#"[{"requests":[]}]"#, None),
            (r#"{"requests":[]} trailing"#, None),
        ];
        for (body, expected) in cases {
            assert_eq!(list_length(body.as_bytes(), "requests"), expected, "{body}");
        }
        assert_eq!(list_length(&[0xff, b'{', b'}'], "requests"), None);
    }

    #[test]
    fn list_shape_names_the_first_element_with_too_long_an_inner_list() {
        let entries = |count: usize| format!(r#"{{"entries":[{}]}}"#, vec!["{}"; count].join(","));
        let body = format!(
            r#"{{"domain":"d","descriptors":[{},"x",[{}],{},{},{}]}}"#,
            entries(2),
            entries(40),
            entries(33),
            entries(50),
            r#"{"entries":null,"entries":{"a":1}}"#
        );
        let shape = list_shape(body.as_bytes(), "descriptors", Some(("entries", 32)));
        assert_eq!(
            shape,
            Some(ListShape {
                length: 6,
                crowded: Some((3, 33)),
            })
        );
        let within = format!(r#"{{"descriptors":[{}]}}"#, entries(32));
        assert_eq!(
            list_shape(within.as_bytes(), "descriptors", Some(("entries", 32))),
            Some(ListShape {
                length: 1,
                crowded: None,
            })
        );
    }
}
