//! Short-lived child commands (a `ringway` client, curl, openssl,
//! Chromium) run to completion with a bound.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::EVENT_TIMEOUT;

/// Bound for one outside command: each takes well under a second
/// (Chromium a few); only a hang gets near this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How a child command ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    /// Everything it wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything it wrote to stderr (lossy UTF-8).
    pub stderr: String,
}

impl Finished {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` in a process group of its own with `input` on its stdin,
/// with `timeout` as a bound: past it the group is killed and the test
/// fails.
pub fn run_bounded(mut cmd: Command, input: &[u8], timeout: Duration) -> Finished {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
    // Invariant: stdin was set to piped just above.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Fed on a thread of its own, so a child that writes before it reads
    // cannot block on a full pipe; dropping the handle is the child's EOF.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
        });
        rx
    };
    let stdout = read_all(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read_all(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = match done.recv_timeout(timeout) {
        Ok(status) => status.unwrap_or_else(|e| panic!("wait for {what}: {e}")),
        Err(_) => {
            // SAFETY: kill has no memory effects; -pid is the group this
            // function created for the child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("{what} did not finish within {timeout:?}");
        }
    };
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(EVENT_TIMEOUT)
            .unwrap_or_else(|_| panic!("{what}: output still open after it exited"))
    };
    Finished {
        code: status.code(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}
