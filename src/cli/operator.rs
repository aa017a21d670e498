//! `ringway operator add`: makes an operator's `[[operators]]` block.
//!
//! The password is read from the terminal without echo (twice), or from
//! `RINGWAY_PASSWORD` for scripts; never from the command line, where
//! other users could read it in the process list. Only its verifier is
//! printed. stdout carries the block alone, valid config as printed, so
//! `ringway operator add alice >> config.toml` works; everything meant for
//! the person at the terminal (the TOTP secret, the `otpauth://` URI, its
//! QR code) goes to stderr.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

use crate::auth::glob::Glob;
use crate::auth::scram::{self, Argon2Params, Verifier};
use crate::auth::totp::{self, TotpSecret};

/// Shortest password accepted: the floor gateway keys have. The lockout
/// slows online guessing, argon2 offline guessing of a leaked verifier;
/// neither saves a password of three letters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The environment variable a script gives the password in.
pub const PASSWORD_ENV: &str = "RINGWAY_PASSWORD";

/// `ringway operator ...`.
#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Make an operator: prints its [[operators]] block on stdout (append
    /// it to the gateway's config) and, with --totp, the authenticator
    /// app's secret, URI and QR code on stderr.
    Add(AddArgs),
}

/// Arguments of `ringway operator add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The name the operator signs in with: letters, digits, . _ @ -.
    name: String,
    /// Give the operator a TOTP secret for an authenticator app.
    #[arg(long)]
    totp: bool,
    /// Names of the gateway keys the operator may use, comma-separated
    /// (default: every key).
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
    /// Agents the operator may see and reach, as a glob (`pc-*`,
    /// `kiosk-??`, `[a-c]*`); repeat for more (default: every agent).
    #[arg(long)]
    agents: Vec<String>,
}

/// Runs `ringway operator ...`.
pub fn run(cmd: OperatorCommand) -> Result<(), String> {
    match cmd {
        OperatorCommand::Add(args) => add(args),
    }
}

fn add(args: AddArgs) -> Result<(), String> {
    if !scram::valid_user(&args.name) {
        return Err(format!(
            "operator name {:?} is not 1 to {} of A-Z a-z 0-9 . _ @ -, starting with a letter or digit",
            args.name,
            scram::MAX_USER_CHARS
        ));
    }
    for key in &args.keys {
        crate::config::check_key_name(key).map_err(|why| format!("--keys: {why}"))?;
    }
    for pattern in &args.agents {
        Glob::new(pattern).map_err(|e| format!("--agents: pattern {pattern:?} {e}"))?;
    }
    let password = password(&args.name)?;
    let verifier = Verifier::generate(password.as_bytes(), &Argon2Params::DEFAULT).map_err(|e| e.to_string())?;
    let secret = args.totp.then(TotpSecret::generate);
    print!("{}", block(&args, &verifier, secret.as_ref()));
    match &secret {
        Some(secret) => eprint!("{}", authenticator_help(&args.name, secret)?),
        None => eprintln!("Add the block above to the gateway's config; it holds a verifier, never the password."),
    }
    Ok(())
}

/// The password from the environment, or typed twice at the terminal.
fn password(name: &str) -> Result<String, String> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password(format!("Password for {name}: "))
                .map_err(|e| format!("cannot read the password: {e}"))?;
            let again =
                rpassword::prompt_password("Once more: ").map_err(|e| format!("cannot read the password: {e}"))?;
            if first != again {
                return Err("the two passwords differ".into());
            }
            first
        }
        Err(_) => {
            return Err(format!(
                "no password: set {PASSWORD_ENV} or run in a terminal to type it"
            ));
        }
    };
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password is {chars} characters; at least {MIN_PASSWORD_CHARS}"
        ));
    }
    if password.len() > scram::MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {} bytes",
            scram::MAX_PASSWORD_BYTES
        ));
    }
    Ok(password)
}

/// The `[[operators]]` block, after a blank line so it can be appended to
/// a file that does not end in one. Strings are quoted by the TOML crate.
fn block(args: &AddArgs, verifier: &Verifier, secret: Option<&TotpSecret>) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |items: &[String]| items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
    let mut text = format!(
        "\n[[operators]]\nname = {}\nverifier = {}\n",
        quote(&args.name),
        quote(&verifier.to_text())
    );
    if let Some(secret) = secret {
        text.push_str(&format!("totp_secret = {}\n", quote(&secret.to_base32())));
    }
    if !args.keys.is_empty() {
        text.push_str(&format!("keys = [{}]\n", list(&args.keys)));
    }
    if !args.agents.is_empty() {
        text.push_str(&format!("agents = [{}]\n", list(&args.agents)));
    }
    text
}

/// What the operator needs for an authenticator app: the secret to type,
/// the URI, and the URI as a QR code.
fn authenticator_help(name: &str, secret: &TotpSecret) -> Result<String, String> {
    let uri = totp::otpauth_uri(name, secret, &totp::Params::DEFAULT);
    let code = QrCode::new(uri.as_bytes()).map_err(|e| format!("cannot draw the QR code: {e}"))?;
    // Light modules drawn as blocks, as qrencode's UTF8 output does: on the
    // usual dark terminal the code then shows dark on light, as scanners want.
    let qr = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    Ok(format!(
        "Add the block above to the gateway's config; it holds a verifier, never the password.\n\
         Keep the config private: the TOTP secret is in it.\n\
         TOTP secret for {name} (type it into an authenticator app, or scan the code):\n  {}\n{uri}\n{qr}\n",
        secret.to_base32()
    ))
}
