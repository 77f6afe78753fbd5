//! Brute-force protection for the token endpoint: failed client-credential attempts are
//! counted per client id and per source address, and a key with too many failures in a window
//! is locked for a while. A locked request is refused (429 with `Retry-After`) before its
//! secret is checked, so it costs no PBKDF2 work, and the right secret is refused too.
//!
//! The tables are bounded: at most [`ThrottleLimits::max_entries`] entries each, of a fixed
//! small size (a client id is kept only as 16 bytes of its SHA-256, an IPv6 source as its /64
//! prefix). When a table is full, expired entries go first, then the unlocked entry with the
//! oldest window, so flooding it with bogus client ids cannot unlock a locked one while it can
//! still evict idle ones. Failures are counted when their check ends, so a burst of concurrent
//! attempts may pass the limit by the number in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// How many failures lock a key, for how long. Times are in seconds of the service clock.
#[derive(Clone, Debug)]
pub(crate) struct ThrottleLimits {
    /// Failures of one client id within a window that lock it.
    pub client_failures: u32,
    /// Failures from one source address within a window that lock it.
    pub source_failures: u32,
    /// The counting window, from a key's first failure.
    pub window_secs: i64,
    /// How long a locked key stays locked.
    pub lockout_secs: i64,
    /// Most entries per table (client ids, source addresses).
    pub max_entries: usize,
}

impl Default for ThrottleLimits {
    /// 10 failures of a client id, or 100 from one address, within 5 minutes lock it for
    /// 60 seconds (Entra's smart lockout locks an account for 60 s after 10 failures); the
    /// tables hold 4,096 entries each.
    fn default() -> Self {
        ThrottleLimits {
            client_failures: 10,
            source_failures: 100,
            window_secs: 300,
            lockout_secs: 60,
            max_entries: 4096,
        }
    }
}

/// A client id as a throttle key: the first 16 bytes of SHA-256 of its lower-case form.
pub(crate) type ClientKey = [u8; 16];

/// The throttle key of a client id.
pub(crate) fn client_key(client_id: &str) -> ClientKey {
    let digest = cmkvault_crypto::sha256(client_id.to_lowercase().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// A source address as a throttle key: IPv4 as is, IPv6 by its /64 prefix (one host usually
/// holds a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Start of the counting window (the first failure in it).
    window_start: i64,
    failures: u32,
    /// Locked while `now < locked_until` (0: not locked).
    locked_until: i64,
}

impl Entry {
    fn locked(&self, now: i64) -> Option<i64> {
        (now < self.locked_until).then(|| self.locked_until - now)
    }

    /// Whether the entry no longer says anything (window over and not locked).
    fn expired(&self, now: i64, limits: &ThrottleLimits) -> bool {
        now >= self.locked_until && now >= self.window_start + limits.window_secs
    }
}

/// One table of counters.
struct Table<K> {
    entries: HashMap<K, Entry>,
}

impl<K: std::hash::Hash + Eq + Copy> Table<K> {
    fn new() -> Self {
        Table {
            entries: HashMap::new(),
        }
    }

    fn locked(&self, key: &K, now: i64) -> Option<i64> {
        self.entries.get(key).and_then(|e| e.locked(now))
    }

    fn fail(&mut self, key: K, limit: u32, now: i64, limits: &ThrottleLimits) {
        if !self.entries.contains_key(&key) && self.entries.len() >= limits.max_entries {
            self.make_room(now, limits);
        }
        let fresh = Entry {
            window_start: now,
            failures: 0,
            locked_until: 0,
        };
        let e = self.entries.entry(key).or_insert(fresh);
        if e.locked(now).is_none() && (e.locked_until != 0 || e.expired(now, limits)) {
            // The window is over, or the lockout served: start counting afresh.
            *e = fresh;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= limit && e.locked(now).is_none() {
            e.locked_until = now + limits.lockout_secs;
        }
    }

    fn forget(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops expired entries; if none expired, the unlocked entry with the oldest window (or,
    /// when all are locked, the one whose lock ends first).
    fn make_room(&mut self, now: i64, limits: &ThrottleLimits) {
        self.entries.retain(|_, e| !e.expired(now, limits));
        if self.entries.len() < limits.max_entries {
            return;
        }
        let victim = self
            .entries
            .iter()
            .min_by_key(|(_, e)| (e.locked(now).is_some(), e.locked_until, e.window_start))
            .map(|(k, _)| *k);
        if let Some(k) = victim {
            self.entries.remove(&k);
        }
    }
}

struct Tables {
    clients: Table<ClientKey>,
    sources: Table<IpAddr>,
}

/// The token endpoint's failure counters.
pub(crate) struct LoginThrottle {
    limits: ThrottleLimits,
    tables: Mutex<Tables>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottleLimits::default())
    }
}

impl LoginThrottle {
    /// A throttle with `limits`.
    pub(crate) fn new(limits: ThrottleLimits) -> Self {
        LoginThrottle {
            limits,
            tables: Mutex::new(Tables {
                clients: Table::new(),
                sources: Table::new(),
            }),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Counters stay meaningful after a panic elsewhere; keep using them.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(seconds until it unlocks)` when the client id or the source address is locked.
    pub(crate) fn check(
        &self,
        client: &ClientKey,
        source: Option<IpAddr>,
        now: i64,
    ) -> Result<(), i64> {
        let t = self.tables();
        let by_client = t.clients.locked(client, now);
        let by_source = source.and_then(|ip| t.sources.locked(&source_key(ip), now));
        match by_client.max(by_source) {
            Some(secs) => Err(secs.max(1)),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt against the client id and the source address.
    pub(crate) fn failed(&self, client: ClientKey, source: Option<IpAddr>, now: i64) {
        let limits = &self.limits;
        let mut t = self.tables();
        t.clients.fail(client, limits.client_failures, now, limits);
        if let Some(ip) = source {
            t.sources
                .fail(source_key(ip), limits.source_failures, now, limits);
        }
    }

    /// A successful sign-in clears the client id's failures (not the address's: one valid
    /// credential must not reset the count of guesses at others).
    pub(crate) fn succeeded(&self, client: &ClientKey) {
        self.tables().clients.forget(client);
    }

    /// Entries held (client ids, source addresses).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let t = self.tables();
        (t.clients.entries.len(), t.sources.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            client_failures: 3,
            source_failures: 5,
            window_secs: 300,
            lockout_secs: 60,
            max_entries: 8,
        }
    }

    #[test]
    fn locks_after_the_limit_and_unlocks_after_the_lockout() {
        let t = LoginThrottle::new(limits());
        let c = client_key("app");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            t.failed(c, Some(ip), 1000);
        }
        assert_eq!(t.check(&c, Some(ip), 1000), Ok(()));
        t.failed(c, Some(ip), 1010);
        assert_eq!(t.check(&c, Some(ip), 1010), Err(60));
        assert_eq!(t.check(&client_key("APP"), None, 1069), Err(1));
        assert_eq!(t.check(&c, Some(ip), 1070), Ok(()));
        // After the lockout, counting starts afresh.
        t.failed(c, Some(ip), 1071);
        assert_eq!(t.check(&c, None, 1071), Ok(()));
        t.succeeded(&c);
        assert_eq!(t.len().0, 0);
    }

    #[test]
    fn a_source_address_is_locked_across_client_ids() {
        let t = LoginThrottle::new(limits());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::ffff".parse().unwrap();
        for i in 0..5 {
            t.failed(client_key(&format!("c{i}")), Some(ip), 0);
        }
        assert_eq!(t.check(&client_key("fresh"), Some(neighbour), 1), Err(59));
        assert_eq!(t.check(&client_key("fresh"), None, 1), Ok(()));
    }

    #[test]
    fn the_tables_stay_bounded_and_keep_locked_entries() {
        let t = LoginThrottle::new(limits());
        let target = client_key("target");
        for _ in 0..3 {
            t.failed(target, None, 0);
        }
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            t.failed(client_key(&format!("bogus-{i}")), Some(ip), 1);
            let (clients, sources) = t.len();
            assert!(clients <= 8 && sources <= 8, "{clients} {sources}");
        }
        assert!(t.check(&target, None, 2).is_err(), "flooding unlocked it");
    }
}
