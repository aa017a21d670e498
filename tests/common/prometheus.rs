//! A parser for the Prometheus text exposition format (version 0.0.4),
//! strict enough to catch what a scraper would trip on.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The metric name (a histogram's `_bucket` etc. included).
    pub name: String,
    /// Label name → value, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name → type, from the `# TYPE` lines.
    pub types: BTreeMap<String, String>,
    /// The samples, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Sum of the samples of `name` whose labels include `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The label sets of `name`'s samples, sorted.
    pub fn label_sets(&self, name: &str) -> Vec<Vec<(String, String)>> {
        let mut sets: Vec<_> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.labels.clone().into_iter().collect::<Vec<_>>())
            .collect();
        sets.sort();
        sets
    }
}

/// Whether `s` is a valid metric name.
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `s` is a valid label name.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses Prometheus text: `# HELP name text` and `# TYPE name kind`
/// lines, samples `name{label="value",...} value [timestamp]`. Every value
/// must be a number, every sample's family declared by a TYPE line before
/// it, each family's lines contiguous, no sample given twice.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut helps = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    let mut sampled = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", i + 1);
        // A family's lines must not be split by another family's.
        let mut enter = |family: &str| -> Result<(), String> {
            if current.as_deref() == Some(family) {
                return Ok(());
            }
            if finished.contains(family) {
                return Err(at(format!("family {family} is not contiguous")));
            }
            finished.extend(current.replace(family.to_string()));
            Ok(())
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // Any other comment is allowed.
            }
            let name = words.next().unwrap_or_default();
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            enter(name)?;
            let rest = words.next().unwrap_or_default();
            if keyword == "HELP" {
                if !helps.insert(name.to_string()) {
                    return Err(at("a second HELP".into()));
                }
                continue;
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                return Err(at(format!("unknown type {rest:?}")));
            }
            if sampled.contains(name) {
                return Err(at("TYPE after the family's samples".into()));
            }
            if out.types.insert(name.to_string(), rest.to_string()).is_some() {
                return Err(at("a second TYPE".into()));
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value_text = fields.next().unwrap_or_default();
        let value: f64 = value_text
            .parse()
            .map_err(|_| at(format!("value {value_text:?} is not a number")))?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(at(format!("timestamp {ts:?} is not an integer")));
        }
        if fields.next().is_some() {
            return Err(at("text after the timestamp".into()));
        }
        let family = family_of(name, &out.types).ok_or_else(|| at(format!("no TYPE line declares {name}")))?;
        enter(&family)?;
        sampled.insert(family);
        if !seen.insert((name.to_string(), labels.clone())) {
            return Err(at("the same sample twice".into()));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// The declared family a sample name belongs to: itself, or for
/// histograms and summaries the name without its suffix.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        let kind = types.get(base)?;
        (kind == "histogram" || kind == "summary").then(|| base.to_string())
    })
}

/// Parses `label="value",...}` (after the `{`); returns the labels and
/// the text after the `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, rest) = s.split_once("=\"").ok_or("a label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("a bad escape in a label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        s = &rest[end + 1..];
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("labels not separated by commas".into());
        }
    }
}
