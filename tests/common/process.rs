//! Child processes whose stderr lines are collected, so tests wait for a
//! line with a condition variable instead of sleeping.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What precedes the text of an event line in env_logger's format.
const EVENT_MARK: &str = "ringway::event] ";

/// Lines a child wrote to stderr, and whether the stream has ended.
#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

/// A child process whose stderr lines are collected by a thread, so tests
/// can wait for a line with a condition variable.
pub struct LoggedChild {
    name: String,
    child: Child,
    log: Arc<(Mutex<LogState>, Condvar)>,
}

impl LoggedChild {
    /// Starts `cmd` with stderr piped (stdin and stdout closed). `name`
    /// labels failure messages.
    pub fn spawn(name: &str, mut cmd: Command) -> LoggedChild {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        // Invariant: stderr was set to piped just above.
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(LogState::default()), Condvar::new()));
        let sink = Arc::clone(&log);
        std::thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || collect_lines(stderr, &sink))
            .expect("spawn the stderr reader thread");
        LoggedChild {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// The texts of the `ringway::event` lines so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.state()
            .lines
            .iter()
            .filter_map(|l| event_text(l))
            .map(str::to_string)
            .collect()
    }

    /// How many event lines so far read exactly `text`.
    pub fn count_events(&self, text: &str) -> usize {
        self.state()
            .lines
            .iter()
            .filter(|l| event_text(l) == Some(text))
            .count()
    }

    /// Waits for a line containing `substring` and returns the first one.
    pub fn wait_for_line(&self, substring: &str, timeout: Duration) -> String {
        self.wait_until(timeout, &format!("a line containing {substring:?}"), |lines| {
            lines.iter().find(|l| l.contains(substring)).cloned()
        })
    }

    /// Waits for an event line reading exactly `text`; returns its position
    /// among all lines (to check the order of events).
    pub fn wait_for_event(&self, text: &str, timeout: Duration) -> usize {
        self.wait_until(timeout, &format!("the event {text:?}"), |lines| {
            lines.iter().position(|l| event_text(l) == Some(text))
        })
    }

    /// Waits until `n` event lines read exactly `text`.
    pub fn wait_for_events(&self, text: &str, n: usize, timeout: Duration) {
        self.wait_until(timeout, &format!("{n} times the event {text:?}"), |lines| {
            (lines.iter().filter(|l| event_text(l) == Some(text)).count() >= n).then_some(())
        })
    }

    /// Waits for an event line starting with `prefix`; returns its text.
    pub fn wait_for_event_prefix(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_until(timeout, &format!("an event starting {prefix:?}"), |lines| {
            lines
                .iter()
                .filter_map(|l| event_text(l))
                .find(|t| t.starts_with(prefix))
                .map(str::to_string)
        })
    }

    /// Kills the child (SIGKILL, by its pid) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock only means a reader panicked; the lines are intact.
        self.log.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on the condition variable until `found` answers, the stream
    /// ends, or `timeout` passes; panics with the log in the last two cases.
    fn wait_until<T>(&self, timeout: Duration, what: &str, found: impl Fn(&[String]) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(v) = found(&state.lines) {
                return v;
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let why = if state.closed { "its stderr closed" } else { "timed out" };
                panic!(
                    "{} never logged {what} ({why} after {:?}); its stderr:\n{}",
                    self.name,
                    timeout,
                    state.lines.join("\n")
                );
            }
            state = self
                .log
                .1
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect_lines(stderr: impl Read, log: &(Mutex<LogState>, Condvar)) {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                log.0.lock().unwrap_or_else(|e| e.into_inner()).lines.push(line);
                log.1.notify_all();
            }
        }
    }
    log.0.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    log.1.notify_all();
}

/// Makes `cmd` start with its open-file limit (soft and hard) at `n`, as
/// `prlimit --nofile=N` would.
pub fn limit_open_files(cmd: &mut Command, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// The text of an event line (`[... INFO  ringway::event] <text>`).
fn event_text(line: &str) -> Option<&str> {
    line.split_once(EVENT_MARK).map(|(_, text)| text)
}
