//! A JSON value deserialized with one rule serde's derive does not have: where a struct
//! (a JSON object) is expected, an array is refused. Derived structs accept a sequence
//! and fill their fields from its items in order, so `"agent": ["Ada", "https://…"]`
//! would be taken as the agent; API.md wants a 400 for that, at any depth.
//!
//! No crate offers this switch (serde_json's own `Value` deserializer behaves like the
//! derive), so this is a thin wrapper over `serde_json::Value`'s deserializer that
//! changes `deserialize_struct` and hands the same wrapper to every nested value; all
//! else is delegated. Used through `serde_path_to_error`, so errors still name the field.

use serde::de::{self, DeserializeSeed, IntoDeserializer as _, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// A JSON value whose objects-as-structs must really be objects.
#[derive(Debug)]
pub struct Strict(pub Value);

impl<'de> de::Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(StrictMap::new(map)),
            Value::Array(items) => visitor.visit_seq(StrictSeq(items.into_iter())),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(_) => Err(de::Error::invalid_type(Unexpected::Seq, &"a JSON object")),
            other => Strict(other).deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Strict(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct StrictSeq(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for StrictSeq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|value| seed.deserialize(Strict(value)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct StrictMap {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl StrictMap {
    fn new(map: Map<String, Value>) -> Self {
        Self {
            entries: map.into_iter(),
            value: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for StrictMap {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(Strict(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::Strict;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Agent {
        display_name: String,
        avatar_url: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        agent: Option<Agent>,
        #[serde(default)]
        origins: Vec<String>,
    }

    #[test]
    fn an_array_where_a_struct_is_expected_is_refused_at_any_depth() {
        let nested = json!({"agent": ["Ada", "https://a.test/a.png"]});
        let err = Config::deserialize(Strict(nested)).expect_err("an array is not an agent");
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
        let top = json!([{"display_name": "Ada"}, []]);
        assert!(Config::deserialize(Strict(top)).is_err());
    }

    #[test]
    fn objects_arrays_of_values_options_and_unknown_fields_behave_as_usual() {
        let value = json!({"agent": {"display_name": "Ada", "avatar_url": null}, "origins": ["https://a.test"]});
        assert_eq!(
            Config::deserialize(Strict(value)).expect("valid"),
            Config {
                agent: Some(Agent {
                    display_name: "Ada".to_owned(),
                    avatar_url: None
                }),
                origins: vec!["https://a.test".to_owned()],
            }
        );
        let unknown = json!({"agnet": {}});
        let err = Config::deserialize(Strict(unknown)).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `agnet`"), "{err}");
    }
}
