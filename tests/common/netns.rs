//! Network namespaces of the test's own, for faults that must not touch
//! the machine's network: threads and child processes enter them, and
//! `ip`, `iptables` and `tc` configure them.
//!
//! A namespace here has no name in /run/netns: it lives exactly as long
//! as something holds it (this struct's descriptor, a socket made in it, a
//! process in it). Its veths, addresses, qdiscs and iptables rules go with
//! it, so nothing is left behind when a test fails, panics or is killed.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::{COMMAND_TIMEOUT, run_bounded};

/// What a failure to make or enter a namespace means on a CI machine:
/// these tests must fail there, never skip.
const NEEDS: &str = "the fault tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and a kernel with \
                     network namespaces; .ci/run runs them as root";

/// A network namespace, alive while this (or anything made in it) lives.
pub struct Netns {
    /// `/proc/thread-self/ns/net` of the thread that made it: entering
    /// and naming it go through this descriptor.
    fd: OwnedFd,
    /// For failure messages.
    label: String,
}

impl Netns {
    /// A fresh namespace with its loopback up.
    pub fn new(label: &str) -> Netns {
        // unshare moves only the calling thread, so a throwaway thread
        // makes the namespace and hands its descriptor back.
        let made = std::thread::spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: unshare has no memory effects; it moves only this
            // thread, which ends right after opening the namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let fd = made.unwrap_or_else(|e| panic!("cannot make a network namespace ({e}): {NEEDS}"));
        let ns = Netns {
            fd,
            label: label.to_string(),
        };
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// A path naming this namespace for `ip ... netns PATH`, valid while
    /// this test process holds it.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    /// Makes `cmd` start inside this namespace. The descriptor is read in
    /// the child between fork and exec, so `self` must outlive the spawn.
    pub fn enter(&self, cmd: &mut Command) {
        let fd = self.fd.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and
        // only makes one system call, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    /// Sockets it makes belong to the namespace for good, whichever
    /// thread uses them later, and threads it spawns start inside it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                // SAFETY: setns has no memory effects; it moves only this
                // scoped thread, which ends when `f` returns.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    panic!("cannot enter the network namespace {} ({e}): {NEEDS}", self.label);
                }
                f()
            });
            thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs `program args` inside this namespace and returns its stdout;
    /// panics, naming the package to install, if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.enter(&mut cmd);
        let done = run_bounded(cmd, b"", COMMAND_TIMEOUT);
        assert!(
            done.success(),
            "`{program} {}` failed in the namespace {} ({:?}): {}\n{NEEDS}, with the packages \
             iproute2 (ip, tc) and iptables installed",
            args.join(" "),
            self.label,
            done.code,
            done.stderr.trim()
        );
        done.stdout
    }

    /// The kernel's TCP counter `name` of this namespace (from the
    /// `TcpExt` lines of /proc/net/netstat, e.g. `TCPSACKReorder`).
    pub fn tcp_counter(&self, name: &str) -> u64 {
        let text = self.run(|| std::fs::read_to_string("/proc/thread-self/net/netstat"));
        let text = text.unwrap_or_else(|e| panic!("read /proc/net/netstat in {}: {e}", self.label));
        let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no TcpExt counter {name} in {}'s /proc/net/netstat", self.label))
    }
}
