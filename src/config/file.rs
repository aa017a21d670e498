//! The pure parse: TOML text into a [`ConfigFile`], checked but holding
//! the paths of certificates and token files rather than their contents.
//! No I/O, so it can be unit-tested and fuzzed.

use serde::Deserialize;
use toml::Spanned;

use super::ConfigFile;
use super::admin::{RawAdmin, parse_admin};
use super::audit::{RawAudit, parse_audit};
use super::auth::{RawAuth, parse_auth};
use super::cluster::{RawCluster, parse_cluster};
use super::error::{ConfigError, Source};
use super::event_log::{RawLog, parse_log};
use super::gateway::{RawGateway, parse_gateway};
use super::keys::{RawKey, parse_keys};
use super::limits::{RawLimits, parse_limits};
use super::operators::{RawOperator, parse_operators};
use super::tls::{RawTls, parse_tls};

/// The file as written: one table per section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: Spanned<RawGateway>,
    keys: Option<Vec<Spanned<RawKey>>>,
    limits: Option<RawLimits>,
    log: Option<RawLog>,
    admin: Option<RawAdmin>,
    tls: Option<RawTls>,
    auth: Option<RawAuth>,
    audit: Option<RawAudit>,
    operators: Option<Spanned<Vec<Spanned<RawOperator>>>>,
    cluster: Option<RawCluster>,
}

/// Parses and checks configuration text; `file` names it in errors.
/// Reads nothing: see [`super::load`] for the step that does.
pub fn parse_str(text: &str, file: &str) -> Result<ConfigFile, ConfigError> {
    let src = Source { file, text };
    let raw: RawConfig = toml::from_str(text)
        .map_err(|e| src.error(e.span().unwrap_or(0..0), e.message().trim_end().replace('\n', "; ")))?;
    let gateway = parse_gateway(raw.gateway.get_ref(), &src)?;
    let keys = parse_keys(
        raw.gateway.get_ref().keys.as_ref(),
        raw.keys.as_ref(),
        raw.gateway.span(),
        &src,
    )?;
    let limits = parse_limits(raw.limits.as_ref().unwrap_or(&RawLimits::default()), &src)?;
    let auth = parse_auth(raw.auth.as_ref(), &src)?;
    let key_names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    let operators = parse_operators(raw.operators.as_ref(), &auth, &key_names, &src)?;
    let cluster = parse_cluster(raw.cluster.as_ref(), &src)?;
    if let Some(c) = &cluster
        && c.relay
    {
        // A relayed connect is checked here and again by the agent's
        // gateway: a one-use code or an approval would be asked twice.
        let why = if auth.totp_per_session {
            Some("[auth] totp_per_session")
        } else if auth.approve.is_some() {
            Some("an [auth] approval hook")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(src.error(
                raw.gateway.span(),
                format!("[cluster] cross = \"relay\" cannot be used with {why}: the agent's gateway would ask again; use cross = \"redirect\""),
            ));
        }
    }
    if let Some(c) = &cluster
        && c.advertise.is_none()
        && gateway.listen[0].ip().is_unspecified()
    {
        return Err(src.error(
            raw.gateway.span(),
            format!(
                "[cluster] needs advertise = \"http://HOST:PORT\": the first listen address {} names no host other gateways' clients can reach",
                gateway.listen[0]
            ),
        ));
    }
    Ok(ConfigFile {
        file: file.to_string(),
        listen: gateway.listen,
        workers: gateway.workers,
        cmpi: gateway.cmpi,
        max_clients: gateway.max_clients,
        state_dir: gateway.state_dir,
        role: gateway.role,
        keys,
        limits,
        log: parse_log(raw.log.as_ref(), &src)?,
        audit: parse_audit(raw.audit.as_ref(), &src)?,
        admin: parse_admin(raw.admin.as_ref(), &src)?,
        tls: parse_tls(raw.tls.as_ref(), &src)?,
        operators,
        auth,
        cluster,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;

    const MINIMAL: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = [\"Testing1\"]\n";

    fn parse_err(text: &str) -> String {
        parse_str(text, "test.toml").expect_err("invalid config").to_string()
    }

    #[test]
    fn errors_from_toml_and_from_sections_name_their_line() {
        assert_eq!(
            parse_err(&format!("{MINIMAL}[limits]\nwrite_timeout_secs = 3601\n")),
            "test.toml:5: write_timeout_secs = 3601 is out of range (1 to 3600)"
        );
        assert_eq!(parse_err(""), "test.toml:1: missing field `gateway`");
        assert_eq!(
            parse_err(&format!("{MINIMAL}[limits]\nshutdown_grace_secs = -1\n")),
            "test.toml:5: invalid value: integer `-1`, expected u64"
        );
    }

    #[test]
    fn unknown_keys_are_refused_in_every_section() {
        for (section, line) in [
            ("", 4),
            ("[limits]\n", 5),
            ("[log]\ndir = \"d\"\n", 6),
            ("[admin]\n", 5),
            ("[tls]\n", 5),
            ("[auth]\n", 5),
            ("[[operators]]\nname = \"alice\"\n", 6),
        ] {
            let e = parse_err(&format!("{MINIMAL}{section}colour = \"blue\"\n"));
            assert!(
                e.starts_with(&format!("test.toml:{line}: unknown field `colour`")),
                "{section:?}: {e}"
            );
        }
        assert!(parse_err(&format!("{MINIMAL}[extra]\n")).starts_with("test.toml:4: unknown field `extra`"));
    }

    #[test]
    fn relay_with_one_use_codes_or_an_approval_hook_is_refused() {
        let cluster = "[cluster]\nredis = \"redis://127.0.0.1\"\nid = \"gw1\"\ncross = \"relay\"\n";
        for (auth, why) in [
            ("totp_per_session = true\n", "[auth] totp_per_session"),
            ("approve_command = \"/bin/true\"\n", "an [auth] approval hook"),
        ] {
            assert_eq!(
                parse_err(&format!("{MINIMAL}[auth]\n{auth}{cluster}")),
                format!(
                    "test.toml:1: [cluster] cross = \"relay\" cannot be used with {why}: the agent's gateway would ask again; use cross = \"redirect\""
                )
            );
        }
        assert!(parse_str(&format!("{MINIMAL}{cluster}"), "test.toml").is_ok());
        assert_eq!(
            parse_err(
                "[gateway]\nlisten = [\"0.0.0.0:1\"]\nkeys = [\"Testing1\"]\n[cluster]\nredis = \"redis://h\"\nid = \"g\"\n"
            ),
            "test.toml:1: [cluster] needs advertise = \"http://HOST:PORT\": the first listen address 0.0.0.0:1 names no host other gateways' clients can reach"
        );
    }

    #[test]
    fn keys_are_hidden_from_debug() {
        let c = parse_str(MINIMAL, "test.toml").expect("valid config");
        let shown = format!("{c:?}");
        assert!(!shown.contains("Testing1"), "{shown}");
        assert!(shown.contains("secret hidden"), "{shown}");
    }

    /// Every key some section knows, so random lines hit real checks.
    const KNOWN_KEYS: [&str; 36] = [
        "workers",
        "role",
        "cmpi_secs",
        "max_clients",
        "head_timeout_secs",
        "pairing_timeout_secs",
        "relay_buffer_kb",
        "max_pending_sessions",
        "max_pending_per_key",
        "max_pending_per_control",
        "handshake_timeout_secs",
        "max_connections",
        "shutdown_grace_secs",
        "max_unauthenticated_per_source",
        "new_connections_per_source_per_sec",
        "new_connections_burst_per_source",
        "max_agents_per_key",
        "write_timeout_secs",
        "listen",
        "token_file",
        "hosts",
        "cert",
        "key",
        "require",
        "max_file_kb",
        "max_files",
        "utc",
        "totp",
        "totp_per_session",
        "ticket_hours",
        "lockout_after",
        "lockout_minutes",
        "approve_command",
        "approve_url",
        "approve_timeout_secs",
        "file",
    ];

    proptest::proptest! {
        /// What a fuzzer will feed it: any text gives a config or an error
        /// whose line is one of the text's, never a panic.
        #[test]
        fn any_text_parses_or_names_a_line_within_it(text in "(\\PC|\n){0,400}") {
            if let Err(e) = parse_str(&text, "fuzz.toml") {
                proptest::prop_assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
            }
        }

        /// Text that is almost a config: the minimal one with a random
        /// line appended, so the section checks, not only TOML, are reached.
        #[test]
        fn a_random_extra_line_parses_or_names_a_line(
            section in proptest::sample::select(vec!["", "[limits]\n", "[admin]\n", "[tls]\n", "[log]\ndir = \"d\"\n", "[auth]\n"]),
            key in proptest::prop_oneof![proptest::sample::select(KNOWN_KEYS.to_vec()).prop_map(String::from), "[a-z_]{1,12}"],
            value in "-?[0-9]{1,21}|\"[ -~]{0,30}\"|\\[(\"[ -~]{0,12}\", ?){0,3}\\]|true",
        ) {
            let text = format!("{MINIMAL}{section}{key} = {value}\n");
            if let Err(e) = parse_str(&text, "fuzz.toml") {
                proptest::prop_assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
            }
        }
    }
}
