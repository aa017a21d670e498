//! Config files written before this version still parse (the example and
//! every fixture under tests/fixtures/config/), and `ringway check-config`
//! checks the new settings, naming the file, line and reason.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringway::config::{self, Limits, parse_str};

use common::{COMMAND_TIMEOUT, TestDir, run_bounded};

/// The fixtures folder.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// A fixture's text.
fn fixture(name: &str) -> String {
    fs::read_to_string(fixtures().join(name)).unwrap_or_else(|e| panic!("cannot read fixture {name}: {e}"))
}

#[test]
fn every_fixture_and_the_example_still_parse() {
    // Named one by one, so a fixture added without a check here, or one
    // gone missing, fails this test rather than going unchecked.
    let mut found: Vec<String> = fs::read_dir(fixtures())
        .expect("list the fixtures")
        .map(|e| e.expect("a fixture entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "bench.toml",
            "every-old-setting.toml",
            "minimal.toml",
            "operated.toml",
            "small-pending.toml"
        ]
    );
    for name in &found {
        parse_str(&fixture(name), name).unwrap_or_else(|e| panic!("{e}"));
    }

    let example = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example"))
        .expect("read config.toml.example");
    let c = parse_str(&example, "config.toml.example").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.limits, Limits::default());

    let minimal = parse_str(&fixture("minimal.toml"), "minimal.toml").expect("minimal");
    assert_eq!(minimal.limits, Limits::default());
    assert!(minimal.log.is_none() && minimal.admin.is_none() && minimal.tls.is_none());

    let old = parse_str(&fixture("every-old-setting.toml"), "every-old-setting.toml").expect("old settings");
    assert_eq!(
        (old.listen.len(), old.workers, old.cmpi, old.max_clients, old.keys.len()),
        (2, 4, Duration::from_secs(30), 500, 2)
    );
    assert_eq!(
        old.limits,
        Limits {
            head_timeout: Duration::from_secs(5),
            pairing_timeout: Duration::from_secs(20),
            relay_buffer: 128 * 1024,
            max_pending_sessions: 2048,
            handshake_timeout: Duration::from_secs(7),
            max_connections: 20_000,
            ..Limits::default()
        }
    );
    let tls = old.tls.expect("[tls]");
    assert_eq!(
        (tls.cert.value, tls.cert.line, tls.key.line, tls.require),
        (PathBuf::from("certs/cert.pem"), 19, 20, true)
    );
    let admin = old.admin.expect("[admin]");
    assert_eq!(
        admin.token_file.map(|f| (f.value, f.line)),
        Some(("/etc/ringway/admin.token".into(), 31))
    );
    assert_eq!(admin.hosts, Vec::<String>::new());

    let small = parse_str(&fixture("small-pending.toml"), "small-pending.toml").expect("a small whole");
    assert_eq!(
        (
            small.limits.max_pending_sessions,
            small.limits.max_pending_per_key,
            small.limits.max_pending_per_control
        ),
        (16, 16, 16)
    );

    // The ones that name no files load as they are.
    for name in ["minimal.toml", "operated.toml", "small-pending.toml"] {
        config::load(&fixtures().join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Runs `ringway check-config FILE`.
fn check_config(file: &Path) -> common::Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.arg("check-config").arg(file);
    run_bounded(cmd, b"", COMMAND_TIMEOUT)
}

#[test]
fn check_config_accepts_the_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let done = check_config(&example);
    let line = include_str!("../config.toml.example")
        .lines()
        .position(|l| l == "key = \"change-me-please\"")
        .expect("the example's key")
        + 1;
    assert_eq!(
        (done.code, done.stdout, done.stderr),
        (
            Some(0),
            format!("{}: ok (1 listen address(es), 1 key(s): main)\n", example.display()),
            // Its placeholder key is weak, and check-config says so
            // without failing the check.
            format!(
                "{}:{line}: warning: key \"main\" is weak (16 characters, about 55 bits); anyone who sniffs one \
                 proof on plain HTTP can test guesses offline: use `ringway gen-key`\n",
                example.display()
            )
        )
    );
}

#[test]
fn check_config_reads_named_keys_from_files_and_names_them() {
    let dir = TestDir::new("named-keys");
    let strong = "3f9c0a7be21d45c8906e7fa1b2c3d4e5";
    fs::write(dir.path().join("acme.key"), format!("{strong}\n")).expect("write the key file");
    let file = dir.path().join("gw.toml");
    fs::write(
        &file,
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n\n[[keys]]\nname = \"acme\"\nkey_file = \"acme.key\"\n\n\
         [[keys]]\nname = \"globex\"\nkey = \"9b8a7c6d5e4f30211a2b3c4d5e6f7081\"\n",
    )
    .expect("write the config");
    let done = check_config(&file);
    assert_eq!(
        (done.code, done.stdout, done.stderr),
        (
            Some(0),
            format!(
                "{}: ok (1 listen address(es), 2 key(s): acme, globex)\n",
                file.display()
            ),
            String::new()
        )
    );

    // A key file that is missing fails the check on the line naming it.
    fs::remove_file(dir.path().join("acme.key")).expect("remove the key file");
    let done = check_config(&file);
    assert_eq!(done.code, Some(1));
    let expect = format!(
        "ringway: {}:6: cannot read key file {} of key \"acme\": ",
        file.display(),
        dir.path().join("acme.key").display()
    );
    assert!(done.stderr.starts_with(&expect), "{}", done.stderr);

    // The same secret under two names is refused: it would be one key.
    fs::write(dir.path().join("acme.key"), "9b8a7c6d5e4f30211a2b3c4d5e6f7081").expect("write the key file");
    let done = check_config(&file);
    assert_eq!(
        (done.code, done.stderr),
        (
            Some(1),
            format!(
                "ringway: {}:10: key \"globex\" is the same secret as key \"acme\"\n",
                file.display()
            )
        )
    );
}

#[test]
fn check_config_refuses_each_new_setting_out_of_bounds_naming_its_line() {
    let dir = TestDir::new("check-config");
    let head = "[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = [\"Testing1\"]\n";
    for (body, why) in [
        (
            "[limits]\nshutdown_grace_secs = 3601\n",
            "5: shutdown_grace_secs = 3601 is out of range (0 to 3600)",
        ),
        (
            "[limits]\nwrite_timeout_secs = 0\n",
            "5: write_timeout_secs = 0 is out of range (1 to 3600)",
        ),
        (
            "[limits]\nmax_unauthenticated_per_source = 65537\n",
            "5: max_unauthenticated_per_source = 65537 is out of range (0 to 65536)",
        ),
        (
            "[limits]\nnew_connections_per_source_per_sec = 1000001\n",
            "5: new_connections_per_source_per_sec = 1000001 is out of range (0 to 1000000)",
        ),
        (
            "[limits]\nnew_connections_burst_per_source = 0\n",
            "5: new_connections_burst_per_source = 0 is out of range (1 to 1000000)",
        ),
        (
            "[limits]\nmax_agents_per_key = 4294967296\n",
            "5: max_agents_per_key = 4294967296 is out of range (0 to 4294967295)",
        ),
        (
            "[limits]\nmax_pending_sessions = 8\nmax_pending_per_key = 9\n",
            "6: max_pending_per_key = 9 is above max_pending_sessions = 8: a key's share cannot exceed the whole",
        ),
        (
            "[limits]\nmax_pending_per_control = 1025\n",
            "5: max_pending_per_control = 1025 is above max_pending_per_key = 1024: a control's share cannot exceed its key's",
        ),
        (
            "[admin]\nhosts = [\"console.example\", \"gw.example:9090\"]\n",
            "5: admin host \"gw.example:9090\" is not a DNS name or IP address (give it without scheme or port)",
        ),
    ] {
        let path = dir.join("gw.toml");
        fs::write(&path, format!("{head}{body}")).expect("write a config");
        let done = check_config(&path);
        assert_eq!(
            (done.code, done.stdout, done.stderr),
            (Some(1), String::new(), format!("ringway: {}:{why}\n", path.display())),
            "{body:?}"
        );
    }
}
