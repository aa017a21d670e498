//! A real `redis-server` of the test's own, on a Unix socket in the
//! test's folder (no port to race for), without persistence, so a
//! restart comes back empty.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::LoggedChild;
use super::{EVENT_TIMEOUT, TestDir};

/// Where Debian's package puts it; `.ci/run` installs it.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// What redis-server says once it serves (7.x: "The server is now ready
/// to accept connections at ...").
const READY: &str = "ready to accept connections";

/// A running `redis-server`, killed (SIGKILL, by pid) when dropped.
pub struct Redis {
    process: LoggedChild,
    socket: PathBuf,
}

impl Redis {
    /// Starts redis-server on a socket in `dir` and waits until it serves.
    pub fn start(dir: &TestDir) -> Redis {
        Redis::start_at(&dir.join("redis.sock"))
    }

    /// Starts it on `socket` (again, after [`Redis::kill`]: empty).
    pub fn start_at(socket: &Path) -> Redis {
        assert!(
            Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: install it with `apt-get update && apt-get install -y redis-server`"
        );
        let _ = std::fs::remove_file(socket);
        let mut cmd = Command::new("sh");
        // Its log goes to stdout, which LoggedChild does not read: send it
        // to stderr. `exec` keeps the pid redis-server's.
        cmd.arg("-c").arg(format!(
            "exec {REDIS_SERVER} --port 0 --unixsocket '{}' --unixsocketperm 700 --save '' --appendonly no --dir '{}' --logfile '' >&2",
            socket.display(),
            socket.parent().unwrap_or(Path::new("/tmp")).display()
        ));
        let process = LoggedChild::spawn("redis-server", cmd);
        process.wait_for_line(READY, EVENT_TIMEOUT);
        Redis {
            process,
            socket: socket.to_path_buf(),
        }
    }

    /// The URL gateways are given.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills it (SIGKILL) at once: what it held is lost.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// `redis-cli` against it: its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.process.kill();
    }
}
