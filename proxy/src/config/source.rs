//! Where configuration values come from: the environment, the command line's flags (layered
//! over it) or, in tests, a `HashMap`. [`Reader`] reads a variable through a source, falling
//! back to its default from [`VARS`](super::VARS).

use std::collections::HashMap;

use super::{vars::default_of, ConfigError};

/// Where configuration values come from.
pub trait Source {
    /// The raw value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// Looks in `first`, then in `second`.
#[derive(Debug)]
pub struct Layered<A, B>(pub A, pub B);

impl<A: Source, B: Source> Source for Layered<A, B> {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).or_else(|| self.1.get(key))
    }
}

/// Reads variables from a source, with their defaults, into values or errors naming them.
pub(super) struct Reader<'a> {
    pub(super) source: &'a dyn Source,
}

impl Reader<'_> {
    /// The value of `key` as given, or its default.
    pub(super) fn value(&self, key: &'static str) -> String {
        self.source.get(key).unwrap_or_else(|| default_of(key))
    }

    /// The value of `key`, trimmed, through `f`; an error names the variable and the value.
    pub(super) fn parse<T>(
        &self,
        key: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.value(key);
        f(value.trim()).map_err(|reason| self.invalid(key, &value, reason))
    }

    pub(super) fn invalid(&self, key: &'static str, value: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason,
        }
    }
}
