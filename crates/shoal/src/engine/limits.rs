//! Per-address limits on handshakes: how many sessions one client address may hold at
//! once, and how many handshakes it may make per second. The address is the one the
//! request arrived with (`PeerAddr`: the TCP peer, or the client behind trusted proxies
//! as the cluster ingress resolved it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Default)]
pub(crate) struct AddressLimits {
    /// Open sessions per address; an address leaves the map with its last session.
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Handshakes per address in the current one-second window; cleared when the window
    /// moves on, so the map never holds more than one second's addresses.
    window: Mutex<(Option<Instant>, HashMap<IpAddr, u32>)>,
}

/// Why a handshake was refused.
pub(crate) enum Refusal {
    Sessions,
    Rate,
}

impl AddressLimits {
    /// Counts a handshake from `ip` and says whether it may open a session: fewer than
    /// `max_sessions` open, and at most `per_second` handshakes in this second.
    pub fn check(&self, ip: IpAddr, max_sessions: usize, per_second: u32) -> Result<(), Refusal> {
        if self.open.lock().unwrap().get(&ip).is_some_and(|n| *n >= max_sessions) {
            return Err(Refusal::Sessions);
        }
        let mut window = self.window.lock().unwrap();
        let now = Instant::now();
        if window.0.is_none_or(|start| now.duration_since(start).as_secs() >= 1) {
            *window = (Some(now), HashMap::new());
        }
        let count = window.1.entry(ip).or_insert(0);
        *count = count.saturating_add(1);
        if *count > per_second {
            return Err(Refusal::Rate);
        }
        Ok(())
    }

    pub fn opened(&self, ip: IpAddr) {
        *self.open.lock().unwrap().entry(ip).or_insert(0) += 1;
    }

    pub fn closed(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap();
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }

    #[cfg(test)]
    pub fn open_sessions(&self, ip: IpAddr) -> usize {
        self.open.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_per_address_until_they_close() {
        let limits = AddressLimits::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        limits.opened(a);
        limits.opened(a);
        assert!(matches!(limits.check(a, 2, 100), Err(Refusal::Sessions)));
        assert!(limits.check(b, 2, 100).is_ok());
        limits.closed(a);
        assert!(limits.check(a, 2, 100).is_ok());
        limits.closed(a);
        limits.closed(a); // one close too many changes nothing
        assert_eq!(limits.open_sessions(a), 0);
        assert!(limits.open.lock().unwrap().is_empty(), "an address leaves with its last session");
    }

    #[test]
    fn handshakes_are_counted_per_address_per_second() {
        let limits = AddressLimits::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        for _ in 0..3 {
            assert!(limits.check(a, 100, 3).is_ok());
        }
        assert!(matches!(limits.check(a, 100, 3), Err(Refusal::Rate)));
        assert!(limits.check(b, 100, 3).is_ok(), "another address has its own budget");
        // The next window starts afresh.
        limits.window.lock().unwrap().0 = Some(Instant::now() - std::time::Duration::from_millis(1001));
        assert!(limits.check(a, 100, 3).is_ok());
    }
}
