//! A whole-number setting's key, default and accepted range, kept in one
//! named constant so that each limit and its reason sit in one place.

use toml::Spanned;

use super::error::{ConfigError, Source};

/// A whole-number setting: the key it is written as, the value it takes
/// when absent, and the range it must fall in (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The TOML key, as errors name it.
    pub key: &'static str,
    /// The value when the key is absent.
    pub default: u64,
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
}

impl Bound {
    /// The value given, checked, or the default when absent.
    pub(super) fn take(&self, value: &Option<Spanned<u64>>, src: &Source) -> Result<u64, ConfigError> {
        match value {
            None => Ok(self.default),
            Some(v) if (self.min..=self.max).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(src.error(
                v.span(),
                format!(
                    "{} = {} is out of range ({} to {})",
                    self.key,
                    v.get_ref(),
                    self.min,
                    self.max
                ),
            )),
        }
    }

    /// As [`Bound::take`], as a `usize`. Every bound's `max` fits a u32,
    /// so nothing is lost on 32- or 64-bit targets; a larger one would
    /// saturate rather than wrap.
    pub(super) fn take_usize(&self, value: &Option<Spanned<u64>>, src: &Source) -> Result<usize, ConfigError> {
        self.take(value, src).map(|v| usize::try_from(v).unwrap_or(usize::MAX))
    }
}
