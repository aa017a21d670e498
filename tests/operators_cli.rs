//! `ringway gen-key` and `ringway operator add`, run as the real binary:
//! what they print, that the printed block is valid config as printed,
//! that its verifier signs in with the password and no other, and that
//! the QR code on stderr scans as the `otpauth://` URI.

mod common;

use std::fs;

use ringway::auth::scram::{self, ChannelBinding, Client, ClientFirst, ParamPolicy, ScramError, ServerExchange};
use ringway::auth::totp::{self, TotpSecret};
use ringway::config::{Operator, parse_str};

use common::{COMMAND_TIMEOUT, Finished, TestDir, ringway_command, run_bounded};

/// A gateway with the two named keys the printed blocks refer to.
const MINIMAL: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\n\
    [[keys]]\nname = \"acme\"\nkey = \"3f9c0a7be21d45c8906e7fa1b2c3d4e5\"\n\
    [[keys]]\nname = \"beta\"\nkey = \"9b8a7c6d5e4f30211a2b3c4d5e6f7081\"\n";

const PASSWORD: &str = "correct horse battery";

/// `ringway operator add ARGS` with the password in `RINGWAY_PASSWORD`
/// (or none at all) and stdin a pipe, not a terminal.
fn operator_add(args: &[&str], password: Option<&str>) -> Finished {
    let mut cmd = ringway_command(&["operator", "add"]);
    cmd.args(args);
    match password {
        Some(p) => cmd.env("RINGWAY_PASSWORD", p),
        None => cmd.env_remove("RINGWAY_PASSWORD"),
    };
    run_bounded(cmd, b"", COMMAND_TIMEOUT)
}

/// The one operator of `MINIMAL` plus a printed block, loaded.
fn operator_of(block: &str) -> Operator {
    let text = format!("{MINIMAL}{block}");
    let config = parse_str(&text, "printed.toml")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .load(None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.operators.len(), 1, "{text}");
    config.operators[0].clone()
}

/// A whole sign-in as `user` with `password` against `operator`'s verifier,
/// the gateway's side and the client's, at the real argon2 cost.
fn sign_in(user: &str, password: &str, operator: &Operator) -> Result<(), ScramError> {
    let (client, first) = Client::start(user, &scram::random_nonce(), ChannelBinding::None)?;
    let (gateway, server_first) = ServerExchange::start(
        ClientFirst::parse(&first)?,
        operator.verifier.clone(),
        ChannelBinding::None,
        &scram::random_nonce(),
    )?;
    let (client, client_final) = client
        .receive(&server_first, &ParamPolicy::STRONG)?
        .respond(password.as_bytes())?;
    let done = gateway.finish(&client_final)?;
    client.verify(&done.server_final).map(|_| ())
}

#[test]
fn gen_key_prints_a_new_128_bit_key_once() {
    let run = || run_bounded(ringway_command(&["gen-key"]), b"", COMMAND_TIMEOUT);
    let (one, two) = (run(), run());
    for out in [&one, &two] {
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stderr, "");
        let key = out.stdout.strip_suffix('\n').expect("one line");
        assert_eq!(key.len(), 32, "{key:?}");
        assert!(
            key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{key:?}"
        );
        let config = format!("[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = [\"{key}\"]\n");
        parse_str(&config, "gen-key.toml").unwrap_or_else(|e| panic!("{e}"));
    }
    assert_ne!(one.stdout, two.stdout);
}

#[test]
fn operator_add_prints_a_block_that_is_valid_config_as_printed() {
    let out = operator_add(
        &[
            "alice",
            "--totp",
            "--keys",
            "acme,beta",
            "--agents",
            "pc-*",
            "--agents",
            "kiosk-??",
        ],
        Some(PASSWORD),
    );
    assert!(out.success(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}", out.stdout);
    assert_eq!(lines[..3], ["", "[[operators]]", "name = \"alice\""]);
    assert!(
        lines[3].starts_with("verifier = \"$scram-argon2id$v=19$m=65536,t=3,p=1$"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].starts_with("totp_secret = \"") && lines[4].len() == "totp_secret = \"\"".len() + 32,
        "{}",
        lines[4]
    );
    assert_eq!(
        lines[5..],
        ["keys = [\"acme\", \"beta\"]", "agents = [\"pc-*\", \"kiosk-??\"]"]
    );

    // `>> config.toml` and the gateway's own check.
    let dir = TestDir::new("operator-add");
    let path = dir.join("config.toml");
    fs::write(&path, format!("{MINIMAL}{}", out.stdout)).expect("write the config");
    let path_text = path.to_str().expect("temp paths are UTF-8");
    let check = run_bounded(ringway_command(&["check-config", path_text]), b"", COMMAND_TIMEOUT);
    assert!(check.success(), "{check:?}");
    assert_eq!(
        check.stdout,
        format!("{path_text}: ok (1 listen address(es), 2 key(s): acme, beta)\n")
    );

    let alice = operator_of(&out.stdout);
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.scope.keys, Some(vec!["acme".to_string(), "beta".to_string()]));
    let globs: Vec<&str> = alice.scope.agents.iter().map(|g| g.as_str()).collect();
    assert_eq!(globs, ["pc-*", "kiosk-??"]);
    assert!(alice.scope.may_reach("kiosk-12") && !alice.scope.may_reach("kiosk-1"));
    assert!(alice.totp.is_some());
    assert!(!out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD));
}

#[test]
fn the_printed_verifier_signs_in_with_the_password_and_no_other() {
    let out = operator_add(&["alice"], Some(PASSWORD));
    assert!(out.success(), "{out:?}");
    let alice = operator_of(&out.stdout);
    assert_eq!(sign_in("alice", PASSWORD, &alice), Ok(()));
    assert_eq!(
        sign_in("alice", "correct horse battery!", &alice),
        Err(ScramError::InvalidProof)
    );
    // Two runs with one password give two verifiers (a fresh salt each).
    let again = operator_of(&operator_add(&["alice"], Some(PASSWORD)).stdout);
    assert_ne!(again.verifier, alice.verifier);
}

#[test]
fn without_totp_there_is_no_secret_and_every_key_and_agent() {
    let out = operator_add(&["bob"], Some(PASSWORD));
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    assert!(!out.stdout.contains("totp"), "{}", out.stdout);
    assert_eq!(
        out.stderr,
        "Add the block above to the gateway's config; it holds a verifier, never the password.\n"
    );
    let bob = operator_of(&out.stdout);
    assert_eq!(
        (bob.totp.is_none(), bob.scope.keys, bob.scope.agents.len()),
        (true, None, 0)
    );
}

/// The QR code's rows as drawn: light modules are blocks (`█` both, `▀`
/// the top one, `▄` the bottom one), dark ones spaces. Dark modules, by
/// row and column.
fn qr_modules(drawing: &[&str]) -> Vec<Vec<bool>> {
    let mut rows = Vec::new();
    for line in drawing {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in line.chars() {
            let (t, b) = match c {
                '█' => (false, false),
                '▀' => (false, true),
                '▄' => (true, false),
                ' ' => (true, true),
                other => panic!("{other:?} in the QR code's line {line:?}"),
            };
            top.push(t);
            bottom.push(b);
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

#[test]
fn stderr_shows_the_secret_its_uri_and_a_qr_code_that_scans_as_the_uri() {
    let out = operator_add(&["alice", "--totp"], Some(PASSWORD));
    assert!(out.success(), "{out:?}");
    let in_block = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("totp_secret = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a totp_secret line");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "Add the block above to the gateway's config; it holds a verifier, never the password.",
            "Keep the config private: the TOTP secret is in it.",
            "TOTP secret for alice (type it into an authenticator app, or scan the code):",
            &format!("  {in_block}"),
        ]
    );
    let uri =
        format!("otpauth://totp/ringway:alice?secret={in_block}&issuer=ringway&algorithm=SHA1&digits=6&period=30");
    assert_eq!(lines[4], uri);

    // Scanned as a phone would: found by its finder patterns, decoded with
    // error correction.
    let modules = qr_modules(&lines[5..]);
    let (h, w) = (modules.len(), modules[0].len());
    const SCALE: usize = 4;
    let mut image =
        rqrr::PreparedImage::prepare_from_bitmap(w * SCALE, h * SCALE, |x, y| modules[y / SCALE][x / SCALE]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in:\n{}", lines[5..].join("\n"));
    let (_, content) = grids[0].decode().expect("the QR code decodes");
    assert_eq!(content, uri);

    // And the secret makes the codes the gateway will check.
    let secret = TotpSecret::from_base32(in_block).expect("base32");
    assert_eq!(operator_of(&out.stdout).totp, Some(secret.clone()));
    let now = 1_800_000_000;
    let code = totp::code_at(&secret, &totp::Params::DEFAULT, now);
    assert_eq!(
        totp::verify(&secret, &totp::Params::DEFAULT, &code, now, None),
        Ok(now / 30)
    );
}

#[test]
fn bad_input_is_refused_with_one_clear_line() {
    let long_key = "k".repeat(65);
    for (args, password, want) in [
        (
            vec!["bad name"],
            Some(PASSWORD),
            "ringway: operator name \"bad name\" is not 1 to 64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit\n".to_string(),
        ),
        (
            vec!["alice", "--keys", &long_key],
            Some(PASSWORD),
            format!("ringway: --keys: key name \"{long_key}\" must be 1 to 32 characters\n"),
        ),
        (
            vec!["alice", "--agents", "pc-[0-9"],
            Some(PASSWORD),
            "ringway: --agents: pattern \"pc-[0-9\" has a [ with no ] to close it\n".into(),
        ),
        (
            vec!["alice"],
            Some("short"),
            "ringway: the password is 5 characters; at least 8\n".into(),
        ),
        (
            vec!["alice"],
            None,
            "ringway: no password: set RINGWAY_PASSWORD or run in a terminal to type it\n".into(),
        ),
    ] {
        let out = operator_add(&args, password);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", want.as_str()), "{args:?}");
    }
}
