//! The configuration reference is checked against the config struct itself:
//! every key `Config` accepts is in `docs/configuration.md` (and nothing
//! documented is missing from it), every key is in
//! `deploy/config.example.toml`, and the example's commented-out keys are
//! spelled so that uncommenting them still parses.
//!
//! The keys are found by walking `Config`'s `Deserialize` impl with a probing
//! deserializer (serde hands every struct's field names to
//! `deserialize_struct`), not by reading Rust source, so the check holds
//! wherever the section structs live.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use identity_gateway::Config;
use serde::de::{
    self, value::StrDeserializer, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};

/// What sits at a path of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A table (`[section]`) with these fields.
    Table,
    /// An array; its element is at `<path>.[]`.
    Array,
    /// A table with free-form keys.
    Map,
    /// A scalar; for enums, the accepted values.
    Value(Option<&'static [&'static str]>),
}

#[derive(Default)]
struct Walk {
    kinds: BTreeMap<Vec<String>, Kind>,
    pending: Vec<Vec<String>>,
}

/// Deserializes along `target`, yielding only the keys on that path, and
/// records what it finds at the end of it. Leaves answer with an error: the
/// walk needs types, not values.
#[derive(Clone, Copy)]
struct Probe<'a> {
    target: &'a [String],
    depth: usize,
    walk: &'a RefCell<Walk>,
}

impl Probe<'_> {
    fn here(&self) -> bool {
        self.depth == self.target.len()
    }

    fn record(&self, kind: Kind) -> de::value::Error {
        self.walk
            .borrow_mut()
            .kinds
            .insert(self.target.to_vec(), kind);
        de::Error::custom("probe")
    }

    fn queue(&self, child: &str) {
        let mut path = self.target.to_vec();
        path.push(child.to_string());
        self.walk.borrow_mut().pending.push(path);
    }

    fn deeper(self) -> Self {
        Probe {
            depth: self.depth + 1,
            ..self
        }
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        if self.here() {
            return Err(self.record(Kind::Value(None)));
        }
        Err(de::Error::custom("a scalar on the path"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        Err(self.record(Kind::Value(Some(variants))))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.here() {
            self.queue("[]");
            return Err(self.record(Kind::Array));
        }
        visitor.visit_seq(OneElement(Some(self.deeper())))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(self.record(Kind::Map))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if self.here() {
            fields.iter().for_each(|f| self.queue(f));
            return Err(self.record(Kind::Table));
        }
        visitor.visit_map(OneKey {
            key: Some(self.target[self.depth].as_str()),
            value: self.deeper(),
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

struct OneKey<'a> {
    key: Option<&'a str>,
    value: Probe<'a>,
}

impl<'de> MapAccess<'de> for OneKey<'_> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.key.take() {
            Some(key) => {
                let key: StrDeserializer<'_, Self::Error> = key.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        seed.deserialize(self.value)
    }
}

struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = de::value::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        self.0
            .take()
            .map(|probe| seed.deserialize(probe))
            .transpose()
    }
}

/// Every path in `T`'s configuration and what is there.
fn walk<T: serde::de::DeserializeOwned>() -> BTreeMap<Vec<String>, Kind> {
    let walk = RefCell::new(Walk {
        pending: vec![Vec::new()],
        ..Walk::default()
    });
    loop {
        let Some(target) = walk.borrow_mut().pending.pop() else {
            break;
        };
        let _ = T::deserialize(Probe {
            target: &target,
            depth: 0,
            walk: &walk,
        });
        assert!(
            walk.borrow().kinds.contains_key(&target),
            "the walk did not reach {target:?}"
        );
    }
    walk.into_inner().kinds
}

/// The keys an operator writes, as (section, key): `("", "socket")`,
/// `("identity", "source")`, `("policy.rules", "uids")` for `[[policy.rules]]`.
fn config_keys() -> BTreeMap<(String, String), Kind> {
    let kinds = walk::<Config>();
    let mut keys = BTreeMap::new();
    for (path, kind) in &kinds {
        let Some((key, parent)) = path.split_last() else {
            continue;
        };
        if key == "[]" {
            continue;
        }
        let is_key = match kind {
            Kind::Value(_) | Kind::Map => true,
            // An array of scalars is a key; an array of tables is a section.
            Kind::Array => {
                let mut element = path.clone();
                element.push("[]".into());
                kinds.get(&element) != Some(&Kind::Table)
            }
            Kind::Table => false,
        };
        if is_key {
            let section: Vec<&str> = parent
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "[]")
                .collect();
            keys.insert((section.join("."), key.clone()), kind.clone());
        }
    }
    keys
}

/// `[section]`, `[[section]]` or `# [section]` (a commented-out example).
fn section_header(line: &str) -> Option<String> {
    let line = line.trim_start_matches('#').trim();
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let name = inner.trim_start_matches('[').trim();
    (!name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
    .then(|| name.to_string())
}

/// `key = value` or `# key = value`: the key.
fn key_line(line: &str) -> Option<String> {
    let line = line.trim();
    let line = line.strip_prefix('#').map_or(line, str::trim_start);
    let (key, _) = line.split_once(" = ")?;
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| key.to_string())
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_walk_finds_the_keys_we_know() {
    let keys = config_keys();
    let has = |section: &str, key: &str| keys.contains_key(&(section.into(), key.into()));
    assert!(has("", "socket"));
    assert!(has("identity", "max_concurrent"));
    assert!(
        has("upstream", "allowed_hosts"),
        "an array of strings is a key"
    );
    assert!(
        has("policy.rules", "uids"),
        "array-of-tables fields are keys"
    );
    assert!(!has("", "policy") && !has("policy", "rules"));
    assert_eq!(
        keys[&("identity".to_string(), "source".to_string())],
        Kind::Value(Some(&["auto", "imds", "app-service", "legacy-msi"]))
    );
}

/// docs/configuration.md documents each key in a table row ``| `key` |``
/// under a heading naming its section (`` ## `[identity]` ``,
/// `` ## `[[policy.rules]]` ``; keys before the first such heading are
/// top-level), and names each accepted value of an enum key.
#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let doc = read("docs/configuration.md");
    let mut documented = BTreeMap::new();
    let mut section = String::new();
    for line in doc.lines() {
        if line.starts_with('#') {
            if let Some(name) = line.split('`').nth(1).and_then(section_header) {
                section = name;
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("| `") {
            if let Some((key, row)) = rest.split_once('`') {
                documented.insert((section.clone(), key.to_string()), row.to_string());
            }
        }
    }
    let keys = config_keys();
    let missing: Vec<_> = keys
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md (section, key): {missing:?}"
    );
    let stale: Vec<_> = documented
        .keys()
        .filter(|k| !keys.contains_key(*k))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/configuration.md documents keys the gateway does not accept: {stale:?}"
    );
    for ((section, key), kind) in &keys {
        if let Kind::Value(Some(values)) = kind {
            let row = &documented[&(section.clone(), key.clone())];
            for value in *values {
                assert!(
                    row.contains(&format!("`{value}`")),
                    "docs/configuration.md: [{section}] {key} does not name the value `{value}`"
                );
            }
        }
    }
}

#[test]
fn the_example_config_lists_every_key() {
    let example = read("deploy/config.example.toml");
    let mut listed = BTreeSet::new();
    let mut section = String::new();
    for line in example.lines() {
        if let Some(name) = section_header(line) {
            section = name;
        } else if let Some(key) = key_line(line) {
            listed.insert((section.clone(), key));
        }
    }
    let missing: Vec<_> = config_keys()
        .into_keys()
        .filter(|k| !listed.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from deploy/config.example.toml (section, key): {missing:?}"
    );
}

#[test]
fn the_example_config_still_parses_with_every_key_uncommented() {
    let example = read("deploy/config.example.toml");
    let uncommented: String = example
        .lines()
        .map(|line| {
            let bare = line.strip_prefix('#').map(str::trim_start);
            match bare {
                Some(rest) if section_header(line).is_some() || key_line(line).is_some() => {
                    format!("{rest}\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect();
    if let Err(e) = Config::from_toml(&uncommented) {
        panic!("deploy/config.example.toml with its keys uncommented: {e}\n{uncommented}");
    }
}
