//! `ringway agent --config FILE`: the agent's settings in a TOML file, for
//! a service manager to start it with (the seed's clients keep theirs in a
//! file too). Each setting is the long option of the same name, so the
//! file and the command line say the same things and clap checks both
//! alike; an option given on the command line wins over the file.
//!
//! ```toml
//! gateway = "https://gw-a.example.com:443"
//! secondary = ["https://gw-b.example.com:443"]
//! key_file = "/etc/ringway/agent.key"
//! expose = "127.0.0.1:22"
//! name = "pc-17"            # default: the host name
//! ca_file = "/etc/ringway/ca.pem"
//! ```

use std::ffi::OsString;
use std::path::Path;

use serde::Deserialize;

/// Longest agent config file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The file as written; every field is optional here (clap says which
/// are needed once file and command line are put together).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    gateway: Option<String>,
    secondary: Option<Vec<String>>,
    key_file: Option<String>,
    ca_file: Option<String>,
    pin_sha256: Option<String>,
    insecure: Option<bool>,
    name: Option<String>,
    expose: Option<String>,
    state_dir: Option<String>,
    dead_after: Option<u64>,
    probe_secs: Option<u64>,
    hold_down_secs: Option<u64>,
}

/// `args` (the whole command line) with `agent --config FILE` replaced by
/// the file's settings as options, before the command line's own; a
/// setting the command line also gives is left out, so the command line
/// wins. Any other command line comes back as it was.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    if args.get(1).and_then(|a| a.to_str()) != Some("agent") {
        return Ok(args);
    }
    let mut rest: Vec<OsString> = Vec::new();
    let mut file = None;
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => file = Some(it.next().ok_or("--config needs a file")?.clone()),
            Some(s) if s.starts_with("--config=") => file = Some(OsString::from(&s["--config=".len()..])),
            _ => rest.push(a.clone()),
        }
    }
    let Some(file) = file else { return Ok(args) };
    let given = |opt: &str| {
        rest.iter()
            .filter_map(|a| a.to_str())
            .any(|a| a == opt || a.starts_with(&format!("{opt}=")))
    };
    let path = Path::new(&file);
    let mut settings = read(path)?;
    // Relative paths in the file are the file's, as in the gateway's
    // config: a service manager starts the agent from anywhere.
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut settings.key_file, &mut settings.ca_file, &mut settings.state_dir]
        .into_iter()
        .flatten()
    {
        if Path::new(p.as_str()).is_relative() {
            *p = base.join(&*p).to_string_lossy().into_owned();
        }
    }
    let mut out: Vec<OsString> = args[..2].to_vec();
    let mut push = |opt: &str, value: Option<String>| {
        if let Some(v) = value
            && !given(opt)
        {
            out.push(opt.into());
            out.push(v.into());
        }
    };
    push("--gateway", settings.gateway);
    push("--key-file", settings.key_file);
    push("--ca-file", settings.ca_file);
    push("--pin-sha256", settings.pin_sha256);
    push("--name", settings.name);
    push("--expose", settings.expose);
    push("--state-dir", settings.state_dir);
    push("--dead-after", settings.dead_after.map(|v| v.to_string()));
    push("--probe-secs", settings.probe_secs.map(|v| v.to_string()));
    push("--hold-down-secs", settings.hold_down_secs.map(|v| v.to_string()));
    if !given("--secondary") {
        for s in settings.secondary.unwrap_or_default() {
            out.push("--secondary".into());
            out.push(s.into());
        }
    }
    if settings.insecure == Some(true) && !given("--insecure") {
        out.push("--insecure".into());
    }
    out.extend(rest);
    Ok(out)
}

fn read(path: &Path) -> Result<AgentFile, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read agent config {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "agent config {} is over {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        format!("{}:{line}: {}", path.display(), e.message().trim_end())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn file(text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("ringway-agent-file-{}-{}.toml", std::process::id(), text.len()));
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn the_file_becomes_options_and_the_command_line_wins() {
        let f = file(
            "gateway = \"gw-a:1\"\nsecondary = [\"gw-b:2\", \"gw-c:3\"]\nkey_file = \"/etc/k\"\nexpose = \"127.0.0.1:22\"\nname = \"pc-1\"\ndead_after = 5\n",
        );
        let got = expand(args(&[
            "ringway",
            "agent",
            "--config",
            f.to_str().expect("utf-8"),
            "--name",
            "pc-2",
        ]))
        .expect("valid");
        let got: Vec<&str> = got.iter().map(|a| a.to_str().expect("utf-8")).collect();
        assert_eq!(
            got,
            [
                "ringway",
                "agent",
                "--gateway",
                "gw-a:1",
                "--key-file",
                "/etc/k",
                "--expose",
                "127.0.0.1:22",
                "--dead-after",
                "5",
                "--secondary",
                "gw-b:2",
                "--secondary",
                "gw-c:3",
                "--name",
                "pc-2"
            ]
        );
        let _ = std::fs::remove_file(f);
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_folder() {
        let f = file("key_file = \"agent.key\"\n");
        let got = expand(args(&["ringway", "agent", "--config", f.to_str().expect("utf-8")])).expect("valid");
        let want = f.parent().expect("a folder").join("agent.key");
        assert_eq!(got[3], want.into_os_string());
        let _ = std::fs::remove_file(f);
    }

    #[test]
    fn other_commands_and_agents_without_a_file_are_untouched() {
        let plain = args(&["ringway", "agent", "--gateway", "g:1", "--expose", "127.0.0.1:22"]);
        assert_eq!(expand(plain.clone()), Ok(plain));
        let control = args(&["ringway", "control", "ls", "--config", "x"]);
        assert_eq!(expand(control.clone()), Ok(control));
    }

    #[test]
    fn a_bad_file_names_its_line_and_what_is_wrong() {
        let f = file("gateway = \"g:1\"\nexposee = \"127.0.0.1:22\"\n");
        let err = expand(args(&["ringway", "agent", "--config", f.to_str().expect("utf-8")])).expect_err("unknown key");
        assert!(
            err.starts_with(&format!("{}:2: unknown field `exposee`", f.display())),
            "{err}"
        );
        let _ = std::fs::remove_file(f);
        let missing = expand(args(&["ringway", "agent", "--config", "/nonexistent/agent.toml"])).expect_err("missing");
        assert!(
            missing.starts_with("cannot read agent config /nonexistent/agent.toml: "),
            "{missing}"
        );
    }
}
