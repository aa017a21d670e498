//! `[[operators]]`: the people who sign in to browse and connect. With
//! at least one, a control needs an operator's sign-in as well as the
//! gateway key; with none, the key alone admits it, as before.
//!
//! The parse checks every field and keeps a TOTP secret file's path; the
//! load step (`load.rs`) reads it. What the gateway keeps of a password is a
//! [`Verifier`], never the password.

use std::path::PathBuf;

use ring::digest;
use serde::Deserialize;
use toml::Spanned;

use super::auth::{AuthConfig, TotpMode};
use super::error::{ConfigError, Located, Source};
use crate::auth::glob::Glob;
use crate::auth::scram::{Verifier, valid_user};
use crate::auth::totp::TotpSecret;

/// Most operators: a support team's roster, not a user directory; each
/// costs a lookup table entry and a lockout record in every gateway.
pub const MAX_OPERATORS: usize = 10_000;

/// Most key names one operator lists: more than any tenant split we know
/// of, and each is compared on every browse and connect.
pub const MAX_OPERATOR_KEYS: usize = 64;

/// Most agent patterns one operator lists: every browse tries each on
/// every agent, so the list stays short; a longer one wants a naming
/// scheme (`site-a-*`) instead.
pub const MAX_AGENT_GLOBS: usize = 64;

/// `[[operators]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperator {
    name: Spanned<String>,
    verifier: Spanned<String>,
    totp_secret: Option<Spanned<String>>,
    totp_secret_file: Option<Spanned<String>>,
    keys: Option<Spanned<Vec<Spanned<String>>>>,
    agents: Option<Spanned<Vec<Spanned<String>>>>,
}

/// What an operator may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The gateway keys it may use, by name; `None` (no `keys` line) is
    /// every key the gateway has.
    pub keys: Option<Vec<String>>,
    /// The agents it may see and reach; empty (no `agents` line) is all.
    pub agents: Vec<Glob>,
}

impl Scope {
    /// Whether the operator may sign in with the key of this name.
    pub fn may_use_key(&self, key_name: &str) -> bool {
        self.keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k == key_name))
    }

    /// Whether the operator may see and connect to this agent.
    pub fn may_reach(&self, agent: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|g| g.matches(agent))
    }
}

/// Where an operator's TOTP secret is, as the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TotpSource {
    /// `totp_secret`, written inline.
    Inline(TotpSecret),
    /// `totp_secret_file`, as written (relative to the config's folder).
    File(Located<PathBuf>),
}

/// An operator as the file gives it, its secret file not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorFile {
    /// The name it signs in with.
    pub name: String,
    /// The line its `name` is on, for errors the load step finds.
    pub line: usize,
    /// Its password's verifier.
    pub verifier: Verifier,
    /// Its TOTP secret, if it has one.
    pub totp: Option<TotpSource>,
    /// What it may reach.
    pub scope: Scope,
}

/// An operator the gateway runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The name it signs in with.
    pub name: String,
    /// Its password's verifier.
    pub verifier: Verifier,
    /// Its TOTP secret, if it has one.
    pub totp: Option<TotpSecret>,
    /// What it may reach.
    pub scope: Scope,
    /// A fingerprint of everything above: the generation its tickets
    /// carry, so any change to the operator (a new password, secret, key
    /// or pattern) ends the tickets issued before it.
    pub generation: u64,
}

/// Checks every `[[operators]]` block against the rest of the file's
/// rules: names unique, and a TOTP secret for everyone when `auth.totp`
/// is required.
/// `key_names` are the configured keys' names, which an operator's `keys`
/// must be among.
pub(super) fn parse_operators(
    raw: Option<&Spanned<Vec<Spanned<RawOperator>>>>,
    auth: &AuthConfig,
    key_names: &[&str],
    src: &Source,
) -> Result<Vec<OperatorFile>, ConfigError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    if raw.get_ref().len() > MAX_OPERATORS {
        return Err(src.error(
            raw.span(),
            format!("{} operators; at most {MAX_OPERATORS}", raw.get_ref().len()),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    let mut operators = Vec::with_capacity(raw.get_ref().len());
    for block in raw.get_ref() {
        let op = parse_operator(block.get_ref(), key_names, src)?;
        let at = block.get_ref().name.span();
        src.push_unique(&mut names, op.name.clone(), at.clone(), "operator")?;
        if auth.totp == TotpMode::Required && op.totp.is_none() {
            return Err(src.error(
                at,
                format!(
                    "operator {} has no TOTP secret, but [auth] totp = \"required\": set totp_secret or totp_secret_file",
                    op.name
                ),
            ));
        }
        operators.push(op);
    }
    Ok(operators)
}

fn parse_operator(raw: &RawOperator, key_names: &[&str], src: &Source) -> Result<OperatorFile, ConfigError> {
    let name = raw.name.get_ref();
    if !valid_user(name) {
        return Err(src.error(
            raw.name.span(),
            format!(
                "operator name {name:?} is not 1 to {} of A-Z a-z 0-9 . _ @ -, starting with a letter or digit",
                crate::auth::scram::MAX_USER_CHARS
            ),
        ));
    }
    // Names are checked above, so they are safe in the messages below.
    let refuse = |span, why: String| Err(src.error(span, format!("operator {name}: {why}")));
    let verifier = match Verifier::parse(raw.verifier.get_ref()) {
        Ok(v) => v,
        Err(e) => return refuse(raw.verifier.span(), format!("verifier {e}")),
    };
    let totp = match (&raw.totp_secret, &raw.totp_secret_file) {
        (Some(_), Some(file)) => {
            return refuse(
                file.span(),
                "totp_secret and totp_secret_file are both set; choose one".into(),
            );
        }
        (Some(inline), None) => match TotpSecret::from_base32(inline.get_ref()) {
            Ok(secret) => Some(TotpSource::Inline(secret)),
            Err(e) => return refuse(inline.span(), format!("totp_secret {e}")),
        },
        (None, Some(file)) if file.get_ref().is_empty() => {
            return refuse(file.span(), "totp_secret_file must not be empty".into());
        }
        (None, Some(file)) => Some(TotpSource::File(Located {
            value: PathBuf::from(file.get_ref()),
            line: src.line(&file.span()),
        })),
        (None, None) => None,
    };
    let keys = match &raw.keys {
        None => None,
        Some(list) => Some(
            names_list(
                list,
                MAX_OPERATOR_KEYS,
                ("keys", "key"),
                "lets it use no key; list key names, or leave keys out for every key",
                src,
                |k| {
                    // A name no key has is a slip (a typo, a key removed
                    // without its operators): refused here, and so on reload.
                    if key_names.contains(&k) {
                        Ok(k.to_string())
                    } else {
                        Err(format!(
                            "key {k:?} is not a configured key name (the keys are: {})",
                            key_names.join(", ")
                        ))
                    }
                },
            )
            .map_err(|e| with_operator(e, name))?,
        ),
    };
    let agents = match &raw.agents {
        None => Vec::new(),
        Some(list) => names_list(
            list,
            MAX_AGENT_GLOBS,
            ("agents", "agent pattern"),
            "reaches no agent; list patterns, or leave agents out for every agent",
            src,
            |p| Glob::new(p).map_err(|e| format!("agent pattern {p:?} {e}")),
        )
        .map_err(|e| with_operator(e, name))?,
    };
    Ok(OperatorFile {
        name: name.clone(),
        line: src.line(&raw.name.span()),
        verifier,
        totp,
        scope: Scope { keys, agents },
    })
}

/// Prefixes an error's reason with the operator it is about.
fn with_operator(mut e: ConfigError, name: &str) -> ConfigError {
    e.reason = format!("operator {name}: {}", e.reason);
    e
}

/// Checks the list under `key` whose entries are each a `what`: not
/// empty (`empty` says why that is a slip), at most `max`, each through
/// `check`, none twice.
fn names_list<T: PartialEq + std::fmt::Display>(
    list: &Spanned<Vec<Spanned<String>>>,
    max: usize,
    (key, what): (&str, &str),
    empty: &str,
    src: &Source,
    check: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    let items = list.get_ref();
    if items.is_empty() {
        return Err(src.error(list.span(), format!("{key} = [] {empty}")));
    }
    if items.len() > max {
        return Err(src.error(list.span(), format!("{key} lists {}; at most {max}", items.len())));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let value = check(item.get_ref()).map_err(|why| src.error(item.span(), why))?;
        src.push_unique(&mut out, value, item.span(), what)?;
    }
    Ok(out)
}

impl OperatorFile {
    /// The operator to run with, given its TOTP secret as the load step
    /// read it (the inline one, or the named file's).
    pub(super) fn with_totp(&self, totp: Option<TotpSecret>) -> Operator {
        Operator {
            generation: generation(&self.name, &self.verifier, totp.as_ref(), &self.scope),
            name: self.name.clone(),
            verifier: self.verifier.clone(),
            totp,
            scope: self.scope.clone(),
        }
    }
}

/// The first 8 bytes of SHA-256 over every field, each length-prefixed so
/// no two operators' fields can run together into the same bytes.
fn generation(name: &str, verifier: &Verifier, totp: Option<&TotpSecret>, scope: &Scope) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    field(b"ringway operator generation v1");
    field(name.as_bytes());
    field(verifier.to_text().as_bytes());
    field(totp.map_or(&[][..], |s| s.as_bytes()));
    match &scope.keys {
        None => field(b"all keys"),
        Some(keys) => keys.iter().for_each(|k| field(format!("key {k}").as_bytes())),
    }
    for g in &scope.agents {
        field(format!("agent {g}").as_bytes());
    }
    let d = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests;
