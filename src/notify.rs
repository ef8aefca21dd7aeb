//! systemd's notification protocol (`sd_notify(3)`), without libsystemd:
//! datagrams to `$NOTIFY_SOCKET`. `READY=1` once serving, `STOPPING=1` on
//! shutdown, and `WATCHDOG=1` every half of `$WATCHDOG_USEC`, sent only after
//! the actor tree answered its liveness ping, so with `WatchdogSec=` in the
//! unit a frozen tree gets the process restarted. Nothing happens outside
//! systemd (no `$NOTIFY_SOCKET`).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification; false when not under systemd or it failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    sent.is_ok()
}

/// How often to send `WATCHDOG=1`, if systemd asks for it (for this process).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
