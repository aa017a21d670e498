use super::*;
use std::path::Path;

use crate::config::auth::AuthConfig;
use crate::config::load::{MAX_TOTP_FILE_BYTES, load_operator};
use crate::config::testing::{Scratch, section};

/// A verifier in the form `ringway operator add` prints, at the default
/// parameters (its keys are made up: no password gives them).
const VERIFIER: &str = "$scram-argon2id$v=19$m=65536,t=3,p=1$c2l4dGVlbiBieXRlIHNsdA$AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE$AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI";

/// RFC 6238's SHA-1 seed, "12345678901234567890", in base32.
const TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// One `[[operators]]` block for `name` with the verifier and `extra` lines.
fn block(name: &str, extra: &str) -> String {
    format!("[[operators]]\nname = {name:?}\nverifier = \"{VERIFIER}\"\n{extra}")
}

/// The key names the blocks below may use, as `[[keys]]` would give them.
const KEY_NAMES: &[&str] = &["acme", "beta"];

fn parse_with(text: &str, auth: &AuthConfig) -> Result<Vec<OperatorFile>, String> {
    section(
        text,
        "operators",
        |raw: Option<&Spanned<Vec<Spanned<RawOperator>>>>, src| parse_operators(raw, auth, KEY_NAMES, src),
    )
}

fn parse(text: &str) -> Result<Vec<OperatorFile>, String> {
    parse_with(text, &AuthConfig::default())
}

fn secret() -> TotpSecret {
    TotpSecret::from_base32(TOTP).expect("the RFC seed")
}

#[test]
fn good_blocks_parse() {
    let text = format!(
        "{}{}",
        block(
            "alice",
            &format!("totp_secret = \"{TOTP}\"\nkeys = [\"acme\", \"beta\"]\nagents = [\"pc-*\", \"kiosk-??\"]\n")
        ),
        block("bob", "totp_secret_file = \"totp/bob\"\n")
    );
    let ops = parse(&text).expect("valid");
    assert_eq!(
        ops,
        vec![
            OperatorFile {
                name: "alice".into(),
                line: 2,
                verifier: Verifier::parse(VERIFIER).expect("a verifier"),
                totp: Some(TotpSource::Inline(secret())),
                scope: Scope {
                    keys: Some(vec!["acme".into(), "beta".into()]),
                    agents: vec![Glob::new("pc-*").expect("glob"), Glob::new("kiosk-??").expect("glob")],
                },
            },
            OperatorFile {
                name: "bob".into(),
                line: 8,
                verifier: Verifier::parse(VERIFIER).expect("a verifier"),
                totp: Some(TotpSource::File(Located {
                    value: PathBuf::from("totp/bob"),
                    line: 10
                })),
                scope: Scope {
                    keys: None,
                    agents: Vec::new(),
                },
            },
        ]
    );
    assert_eq!(
        section("", "operators", |raw, src| parse_operators(
            raw,
            &AuthConfig::default(),
            KEY_NAMES,
            src
        )),
        Ok(vec![])
    );
}

#[test]
fn scopes_limit_keys_and_agents() {
    let ops = parse(&block(
        "alice",
        "keys = [\"acme\"]\nagents = [\"pc-*\", \"kiosk-??\"]\n",
    ))
    .expect("valid");
    let scope = &ops[0].scope;
    assert!(scope.may_use_key("acme"));
    assert!(!scope.may_use_key("beta"));
    for (agent, want) in [
        ("pc-1", true),
        ("kiosk-12", true),
        ("kiosk-1", false),
        ("server", false),
    ] {
        assert_eq!(scope.may_reach(agent), want, "{agent}");
    }
    let everything = Scope {
        keys: None,
        agents: Vec::new(),
    };
    assert!(everything.may_use_key("any") && everything.may_reach("any"));
}

#[test]
fn each_bad_field_is_refused_with_its_line() {
    let long = "k".repeat(65);
    for (text, want) in [
        (
            block("bad name", ""),
            "test.toml:2: operator name \"bad name\" is not 1 to 64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit".to_string(),
        ),
        (
            format!("{}{}", block("alice", ""), block("alice", "")),
            "test.toml:5: operator alice is given twice".into(),
        ),
        (
            "[[operators]]\nname = \"alice\"\nverifier = \"hunter2\"\n".into(),
            "test.toml:3: operator alice: verifier is not $scram-argon2id$v=19$m=...,t=...,p=...$SALT$STOREDKEY$SERVERKEY (make one with `ringway operator add`)".into(),
        ),
        (
            format!(
                "[[operators]]\nname = \"alice\"\nverifier = \"{}\"\n",
                VERIFIER.replace("m=65536", "m=1024")
            ),
            "test.toml:3: operator alice: verifier has argon2 parameters outside m=19456..1048576, t=2..10, p=1..16".into(),
        ),
        (
            block("alice", &format!("totp_secret = \"{TOTP}\"\ntotp_secret_file = \"f\"\n")),
            "test.toml:5: operator alice: totp_secret and totp_secret_file are both set; choose one".into(),
        ),
        (
            block("alice", "totp_secret = \"not base32!\"\n"),
            "test.toml:4: operator alice: totp_secret is not base32 (RFC 4648, A-Z and 2-7, no padding)".into(),
        ),
        (
            block("alice", "totp_secret = \"MZXW6YTBOI\"\n"),
            "test.toml:4: operator alice: totp_secret is 6 bytes; at least 16 (128 bits)".into(),
        ),
        (
            block("alice", "totp_secret_file = \"\"\n"),
            "test.toml:4: operator alice: totp_secret_file must not be empty".into(),
        ),
        (
            block("alice", "keys = []\n"),
            "test.toml:4: operator alice: keys = [] lets it use no key; list key names, or leave keys out for every key".into(),
        ),
        (
            block("alice", &format!("keys = [\"acme\", {long:?}]\n")),
            format!("test.toml:4: operator alice: key {long:?} is not a configured key name (the keys are: acme, beta)"),
        ),
        (
            block("alice", "keys = [\"acme\", \"globex\"]\n"),
            "test.toml:4: operator alice: key \"globex\" is not a configured key name (the keys are: acme, beta)".into(),
        ),
        (
            block("alice", "keys = [\"acme\",\n  \"acme\"]\n"),
            "test.toml:5: operator alice: key acme is given twice".into(),
        ),
        (
            block("alice", "agents = []\n"),
            "test.toml:4: operator alice: agents = [] reaches no agent; list patterns, or leave agents out for every agent".into(),
        ),
        (
            block("alice", "agents = [\"pc-[0-9\"]\n"),
            "test.toml:4: operator alice: agent pattern \"pc-[0-9\" has a [ with no ] to close it".into(),
        ),
        (
            block("alice", "agents = [\"pc-*\", \"pc-*\"]\n"),
            "test.toml:4: operator alice: agent pattern pc-* is given twice".into(),
        ),
        (
            "[[operators]]\nname = \"alice\"\n".into(),
            "missing field `verifier`".into(),
        ),
    ] {
        assert_eq!(parse(&text).map(|_| ()), Err(want.clone()), "{text}");
    }
    let unknown = parse(&block("alice", "password = \"hunter2\"\n")).expect_err("unknown field");
    assert!(unknown.starts_with("unknown field `password`"), "{unknown}");
}

#[test]
fn lists_are_bounded() {
    let many = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(", ");
    let keys = many(MAX_OPERATOR_KEYS + 1, &|i| format!("\"k{i}\""));
    assert_eq!(
        parse(&block("alice", &format!("keys = [{keys}]\n"))).map(|_| ()),
        Err("test.toml:4: operator alice: keys lists 65; at most 64".into())
    );
    let globs = many(MAX_AGENT_GLOBS, &|i| format!("\"pc-{i}-*\""));
    assert_eq!(
        parse(&block("alice", &format!("agents = [{globs}]\n"))).map(|o| o[0].scope.agents.len()),
        Ok(64)
    );
    let globs = many(MAX_AGENT_GLOBS + 1, &|i| format!("\"pc-{i}-*\""));
    assert_eq!(
        parse(&block("alice", &format!("agents = [{globs}]\n"))).map(|_| ()),
        Err("test.toml:4: operator alice: agents lists 65; at most 64".into())
    );
}

#[test]
fn totp_required_needs_a_secret_for_everyone() {
    let required = AuthConfig {
        totp: TotpMode::Required,
        ..AuthConfig::default()
    };
    let text = format!(
        "{}{}",
        block("alice", &format!("totp_secret = \"{TOTP}\"\n")),
        block("bob", "")
    );
    assert_eq!(
        parse_with(&text, &required).map(|_| ()),
        Err("test.toml:6: operator bob has no TOTP secret, but [auth] totp = \"required\": set totp_secret or totp_secret_file".into())
    );
    assert_eq!(parse(&text).map(|o| o.len()), Ok(2));
}

/// Loads every operator of `text` with files relative to `dir`.
fn load(text: &str, dir: &Scratch) -> Result<Vec<Operator>, String> {
    let resolve = |p: &Path| dir.0.join(p);
    let at = |line: usize, reason: String| ConfigError {
        file: "test.toml".into(),
        line,
        reason,
    };
    parse(text)?
        .iter()
        .map(|o| load_operator(o, &resolve, &at).map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn load_reads_the_totp_secret_file() {
    let dir = Scratch::new("totp");
    std::fs::create_dir_all(dir.0.join("totp")).expect("a folder");
    std::fs::write(dir.0.join("totp/bob"), format!("  {}\n", TOTP.to_lowercase())).expect("write a secret");
    let text = format!(
        "{}{}",
        block("alice", &format!("totp_secret = \"{TOTP}\"\n")),
        block("bob", "totp_secret_file = \"totp/bob\"\n")
    );
    let ops = load(&text, &dir).expect("loadable");
    assert_eq!(ops[0].totp, Some(secret()));
    assert_eq!(ops[1].totp, Some(secret()));

    let path = dir.0.join("totp/bob");
    std::fs::write(&path, "not base32\n").expect("write junk");
    assert_eq!(
        load(&text, &dir).map(|_| ()),
        Err(format!(
            "test.toml:8: the TOTP secret in {} is not base32 (RFC 4648, A-Z and 2-7, no padding)",
            path.display()
        ))
    );
    std::fs::write(&path, "A".repeat(MAX_TOTP_FILE_BYTES as usize + 1)).expect("write a huge file");
    assert_eq!(
        load(&text, &dir).map(|_| ()),
        Err(format!(
            "test.toml:8: cannot read TOTP secret file {}: larger than 1024 bytes",
            path.display()
        ))
    );
    std::fs::remove_file(&path).expect("remove it");
    let e = load(&text, &dir).expect_err("no file");
    assert!(
        e.starts_with(&format!(
            "test.toml:8: cannot read TOTP secret file {}: ",
            path.display()
        )),
        "{e}"
    );
}

#[test]
fn the_generation_changes_with_any_field_and_only_then() {
    let dir = Scratch::new("generation");
    let generation = |text: &str| load(text, &dir).expect("loadable")[0].generation;
    let base = generation(&block("alice", "keys = [\"acme\"]\nagents = [\"pc-*\"]\n"));
    assert_eq!(
        base,
        generation(&block("alice", "keys = [\"acme\"]\nagents = [\"pc-*\"]\n"))
    );
    let other_verifier = VERIFIER.replace("$AQEB", "$AQEC");
    for changed in [
        block("alice2", "keys = [\"acme\"]\nagents = [\"pc-*\"]\n"),
        block("alice", "keys = [\"beta\"]\nagents = [\"pc-*\"]\n"),
        block("alice", "agents = [\"pc-*\"]\n"),
        block("alice", "keys = [\"acme\"]\nagents = [\"pc-?\"]\n"),
        block("alice", "keys = [\"acme\"]\n"),
        block(
            "alice",
            &format!("keys = [\"acme\"]\nagents = [\"pc-*\"]\ntotp_secret = \"{TOTP}\"\n"),
        ),
        format!(
            "[[operators]]\nname = \"alice\"\nverifier = \"{other_verifier}\"\nkeys = [\"acme\"]\nagents = [\"pc-*\"]\n"
        ),
    ] {
        assert_ne!(generation(&changed), base, "{changed}");
    }
}

#[test]
fn secrets_are_hidden_from_debug() {
    let dir = Scratch::new("debug");
    let ops = load(&block("alice", &format!("totp_secret = \"{TOTP}\"\n")), &dir).expect("loadable");
    let shown = format!("{ops:?}");
    for secret in [TOTP, "AQEBAQEB", "AgICAgIC", "c2l4dGVl"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("TotpSecret(hidden)") && shown.contains("keys hidden"),
        "{shown}"
    );
}
