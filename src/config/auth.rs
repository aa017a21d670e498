//! The `[auth]` section: how operators sign in. It matters only once
//! `[[operators]]` lists someone; without operators the gateway key alone
//! admits a control, as before.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::bound::Bound;
use super::error::{ConfigError, Source};

/// `ticket_hours`: a working day by default, so an operator signs in once
/// a shift; at most a week, so a ticket copied off a laptop dies soon.
pub const TICKET_HOURS: Bound = Bound {
    key: "ticket_hours",
    default: 12,
    min: 1,
    max: 168,
};

/// `lockout_after`: failed sign-ins in a row before an operator is
/// locked. Five forgives typos and stops online guessing; past a hundred
/// there is no lockout to speak of.
pub const LOCKOUT_AFTER: Bound = Bound {
    key: "lockout_after",
    default: 5,
    min: 1,
    max: 100,
};

/// `lockout_minutes`: how long a locked operator stays locked. Half an
/// hour makes guessing slow (ten tries an hour at the default); a day at
/// most, so a forgotten lock clears itself.
pub const LOCKOUT_MINUTES: Bound = Bound {
    key: "lockout_minutes",
    default: 30,
    min: 1,
    max: 1440,
};

/// `approve_timeout_secs`: how long the approval hook may take to say yes.
/// A minute by default, as long as Duo's own push waits for a person to
/// pick up a phone; no longer, since the control's CLI waits 90 s for a
/// connect's answer (approval, then the agent's join).
pub const APPROVE_TIMEOUT_SECS: Bound = Bound {
    key: "approve_timeout_secs",
    default: 60,
    min: 1,
    max: 60,
};

/// Longest `approve_command` or `approve_url`: a command line or URL, not
/// a script.
pub const MAX_APPROVE_CHARS: usize = 2048;

/// Whether operators give a TOTP code after their password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotpMode {
    /// Never asked, even of operators with a secret.
    Off,
    /// Asked of operators that have a secret.
    #[default]
    Optional,
    /// Every operator must have a secret and give a code.
    Required,
}

/// An outside approval asked before each connect (a push second factor).
#[derive(Clone, PartialEq, Eq)]
pub enum Approve {
    /// A program and its arguments, split on whitespace and run without a
    /// shell (docs/PROTOCOL.md says what it is given); exit status 0 is yes.
    Command(String),
    /// An `http://` or `https://` URL asked with a POST; 2xx is yes.
    Url(String),
}

impl fmt::Debug for Approve {
    /// Hidden: a command or URL may carry a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Approve::Command(_) => "Command(hidden)",
            Approve::Url(_) => "Url(hidden)",
        })
    }
}

/// `[auth]` checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether a TOTP code is asked for.
    pub totp: TotpMode,
    /// Ask for a fresh code on every connect, not only at sign-in (the
    /// seed's "two-factor authentication to start a remote connection").
    pub totp_per_session: bool,
    /// How long a sign-in's ticket is accepted.
    pub ticket_lifetime: Duration,
    /// Failed sign-ins in a row that lock an operator.
    pub lockout_after: u32,
    /// How long a lock lasts.
    pub lockout: Duration,
    /// An approval asked before each connect, if any.
    pub approve: Option<Approve>,
    /// Pin each agent name to the first agent key that registers it (per
    /// gateway key), so another holder of the gateway key cannot take the
    /// name; `false` is first come, as before agent keys.
    pub pin_agent_names: bool,
    /// How long the approval may take; no answer in time is no.
    pub approve_timeout: Duration,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            totp: TotpMode::default(),
            totp_per_session: false,
            ticket_lifetime: Duration::from_secs(TICKET_HOURS.default * 3600),
            // LOCKOUT_AFTER.max fits a u32.
            lockout_after: LOCKOUT_AFTER.default as u32,
            lockout: Duration::from_secs(LOCKOUT_MINUTES.default * 60),
            approve: None,
            pin_agent_names: true,
            approve_timeout: Duration::from_secs(APPROVE_TIMEOUT_SECS.default),
        }
    }
}

/// `[auth]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    totp: Option<Spanned<String>>,
    totp_per_session: Option<Spanned<bool>>,
    ticket_hours: Option<Spanned<u64>>,
    lockout_after: Option<Spanned<u64>>,
    lockout_minutes: Option<Spanned<u64>>,
    approve_command: Option<Spanned<String>>,
    approve_url: Option<Spanned<String>>,
    pin_agent_names: Option<bool>,
    approve_timeout_secs: Option<Spanned<u64>>,
}

/// Checks `[auth]`. Absent: every default.
pub(super) fn parse_auth(raw: Option<&RawAuth>, src: &Source) -> Result<AuthConfig, ConfigError> {
    let Some(a) = raw else {
        return Ok(AuthConfig::default());
    };
    let totp = match &a.totp {
        None => TotpMode::default(),
        Some(t) => match t.get_ref().as_str() {
            "off" => TotpMode::Off,
            "optional" => TotpMode::Optional,
            "required" => TotpMode::Required,
            other => {
                return Err(src.error(
                    t.span(),
                    format!("totp = {other:?} is not one of \"off\", \"optional\", \"required\""),
                ));
            }
        },
    };
    let totp_per_session = match &a.totp_per_session {
        Some(p) if *p.get_ref() && totp == TotpMode::Off => {
            return Err(src.error(p.span(), "totp_per_session = true asks for codes, but totp = \"off\""));
        }
        p => p.as_ref().is_some_and(|p| *p.get_ref()),
    };
    let approve = match (&a.approve_command, &a.approve_url) {
        (Some(_), Some(url)) => {
            return Err(src.error(url.span(), "approve_command and approve_url are both set; choose one"));
        }
        (Some(cmd), None) => Some(Approve::Command(approve_command(cmd, src)?)),
        (None, Some(url)) => Some(Approve::Url(approve_url(url, src)?)),
        (None, None) => None,
    };
    Ok(AuthConfig {
        totp,
        totp_per_session,
        ticket_lifetime: Duration::from_secs(TICKET_HOURS.take(&a.ticket_hours, src)? * 3600),
        // LOCKOUT_AFTER.max fits a u32.
        lockout_after: LOCKOUT_AFTER.take(&a.lockout_after, src)? as u32,
        lockout: Duration::from_secs(LOCKOUT_MINUTES.take(&a.lockout_minutes, src)? * 60),
        approve,
        pin_agent_names: a.pin_agent_names.unwrap_or(true),
        approve_timeout: Duration::from_secs(APPROVE_TIMEOUT_SECS.take(&a.approve_timeout_secs, src)?),
    })
}

/// A command line: not blank, one line, bounded.
fn approve_command(cmd: &Spanned<String>, src: &Source) -> Result<String, ConfigError> {
    let text = cmd.get_ref();
    if text.trim().is_empty() {
        return Err(src.error(cmd.span(), "approve_command must not be empty"));
    }
    bounded_line(text, "approve_command", cmd, src)?;
    Ok(text.clone())
}

/// An `http://` or `https://` URL with a host: bounded, one line, no spaces.
fn approve_url(url: &Spanned<String>, src: &Source) -> Result<String, ConfigError> {
    let text = url.get_ref();
    bounded_line(text, "approve_url", url, src)?;
    let rest = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !text.contains(' ') => Ok(text.clone()),
        _ => Err(src.error(
            url.span(),
            format!("approve_url {text:?} is not an http:// or https:// URL with a host"),
        )),
    }
}

fn bounded_line(text: &str, key: &str, at: &Spanned<String>, src: &Source) -> Result<(), ConfigError> {
    if text.chars().count() > MAX_APPROVE_CHARS {
        return Err(src.error(
            at.span(),
            format!("{key} is longer than {MAX_APPROVE_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(src.error(at.span(), format!("{key} must be one line without control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(body: &str) -> Result<AuthConfig, String> {
        section(&format!("[auth]\n{body}"), "auth", parse_auth)
    }

    #[test]
    fn defaults() {
        let want = AuthConfig {
            totp: TotpMode::Optional,
            totp_per_session: false,
            ticket_lifetime: Duration::from_secs(12 * 3600),
            lockout_after: 5,
            lockout: Duration::from_secs(30 * 60),
            approve: None,
            pin_agent_names: true,
            approve_timeout: Duration::from_secs(60),
        };
        assert_eq!(section("", "auth", parse_auth), Ok(want.clone()));
        assert_eq!(parse(""), Ok(want.clone()));
        assert_eq!(AuthConfig::default(), want);
    }

    #[test]
    fn every_setting_parses() {
        let a = parse(
            "totp = \"required\"\ntotp_per_session = true\nticket_hours = 8\nlockout_after = 3\nlockout_minutes = 60\napprove_command = \"/usr/local/bin/ask-duo --wait 30\"\napprove_timeout_secs = 45\n",
        )
        .expect("valid");
        assert_eq!(
            a,
            AuthConfig {
                totp: TotpMode::Required,
                totp_per_session: true,
                ticket_lifetime: Duration::from_secs(8 * 3600),
                lockout_after: 3,
                lockout: Duration::from_secs(3600),
                approve: Some(Approve::Command("/usr/local/bin/ask-duo --wait 30".into())),
                pin_agent_names: true,
                approve_timeout: Duration::from_secs(45),
            }
        );
        assert_eq!(
            parse("totp = \"off\"\napprove_url = \"https://approve.example/v1/ask?team=ops\"\n")
                .map(|a| (a.totp, a.approve)),
            Ok((
                TotpMode::Off,
                Some(Approve::Url("https://approve.example/v1/ask?team=ops".into()))
            ))
        );
    }

    #[test]
    fn each_bad_field_is_refused_with_its_line() {
        for (body, want) in [
            (
                "totp = \"sometimes\"\n",
                "test.toml:2: totp = \"sometimes\" is not one of \"off\", \"optional\", \"required\"",
            ),
            (
                "totp = \"off\"\ntotp_per_session = true\n",
                "test.toml:3: totp_per_session = true asks for codes, but totp = \"off\"",
            ),
            (
                "ticket_hours = 0\n",
                "test.toml:2: ticket_hours = 0 is out of range (1 to 168)",
            ),
            (
                "ticket_hours = 169\n",
                "test.toml:2: ticket_hours = 169 is out of range (1 to 168)",
            ),
            (
                "lockout_after = 0\n",
                "test.toml:2: lockout_after = 0 is out of range (1 to 100)",
            ),
            (
                "lockout_minutes = 1441\n",
                "test.toml:2: lockout_minutes = 1441 is out of range (1 to 1440)",
            ),
            (
                "approve_timeout_secs = 61\n",
                "test.toml:2: approve_timeout_secs = 61 is out of range (1 to 60)",
            ),
            (
                "approve_command = \"a\"\napprove_url = \"http://x\"\n",
                "test.toml:3: approve_command and approve_url are both set; choose one",
            ),
            (
                "approve_command = \"  \"\n",
                "test.toml:2: approve_command must not be empty",
            ),
            (
                "approve_command = \"ask\\nrm -rf /\"\n",
                "test.toml:2: approve_command must be one line without control characters",
            ),
            (
                "approve_url = \"ftp://approve.example\"\n",
                "test.toml:2: approve_url \"ftp://approve.example\" is not an http:// or https:// URL with a host",
            ),
            (
                "approve_url = \"http:///ask\"\n",
                "test.toml:2: approve_url \"http:///ask\" is not an http:// or https:// URL with a host",
            ),
            (
                "approve_url = \"http://a b\"\n",
                "test.toml:2: approve_url \"http://a b\" is not an http:// or https:// URL with a host",
            ),
        ] {
            assert_eq!(parse(body).map(|_| ()), Err(want.to_string()), "{body}");
        }
        let long = format!("approve_command = \"{}\"\n", "x".repeat(MAX_APPROVE_CHARS + 1));
        assert_eq!(
            parse(&long).map(|_| ()),
            Err("test.toml:2: approve_command is longer than 2048 characters".into())
        );
    }

    #[test]
    fn pin_agent_names_is_on_unless_turned_off() {
        assert_eq!(parse("pin_agent_names = false\n").map(|a| a.pin_agent_names), Ok(false));
        assert_eq!(parse("pin_agent_names = true\n").map(|a| a.pin_agent_names), Ok(true));
        assert_eq!(parse("").map(|a| a.pin_agent_names), Ok(true));
        let e = parse("pin_agent_names = \"no\"\n").expect_err("not a boolean");
        assert!(e.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn the_approval_is_hidden_from_debug() {
        let a = parse("approve_url = \"https://approve.example/?token=s3cret\"\n").expect("valid");
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("Url(hidden)"), "{shown}");
    }
}
