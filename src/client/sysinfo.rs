//! What an agent reports about its machine, read without extra crates.
//! Each function falls back to an empty or generic answer: the details are
//! for the console, never required.

/// This machine's host name.
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(name) = std::str::from_utf8(&buf[..end])
                && !name.is_empty()
            {
                return name.to_string();
            }
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unnamed".to_string())
}

/// The operating system and its version, e.g. `linux 6.18.0`.
pub fn os_description() -> String {
    #[cfg(unix)]
    {
        // SAFETY: uname fills a plain struct of fixed-size C strings.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } == 0 {
            let release: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            return format!("{} {}", std::env::consts::OS, String::from_utf8_lossy(&release));
        }
    }
    std::env::consts::OS.to_string()
}

/// The MAC address of the first non-loopback interface that has one.
pub fn mac_address() -> String {
    #[cfg(target_os = "linux")]
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let path = std::path::Path::new("/sys/class/net").join(&name).join("address");
            if let Ok(mac) = std::fs::read_to_string(path) {
                let mac = mac.trim();
                if !mac.is_empty() && mac != "00:00:00:00:00:00" {
                    return mac.to_string();
                }
            }
        }
    }
    String::new()
}
