//! Abuse limits on token minting (API.md "Abuse limits"): guest tokens per (client key,
//! client IP) and per client key, visitor tokens (`user-token`) per client key.
//!
//! Each limited thing has one GCRA cell (the "theoretical arrival time" of the next
//! request, one atomic): a request conforms when it is no more than the burst's tolerance
//! ahead of that time, and pushes it one emission interval further. The rate and burst
//! come from the key's current policy at each request, so a policy change applies at
//! once. The per-IP cells live in a moka cache, bounded in entries and evicted after
//! being idle longer than any bucket takes to refill: a flood of ever-new IPs evicts
//! idle entries instead of growing the process. The per-key cells need no eviction: a
//! key is limited only once the directory has found it, so there is at most one cell per
//! client key, and they live in plain maps. State is per node (the hot path never asks
//! the store), so N nodes allow up to N times the rate.
//!
//! Also here: which address is the client's ([`TrustedProxies::client_ip`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{ClientKeyId, RateLimits};
use ipnet::IpNet;
use moka::sync::Cache;

/// Entries the per-IP cache holds at most. A cell is a few dozen bytes plus moka's
/// bookkeeping, so the cache stays within tens of MiB even when full.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// An entry idle this long is dropped. It exceeds the longest refill (a bucket of 10 at
/// 1 per minute: 10 minutes), so an evicted idle entry was full anyway and dropping it
/// changes no answer.
pub const IDLE_EVICTION: Duration = Duration::from_secs(10 * 60);

/// The limiter's time: monotonic, as elapsed time since an arbitrary start. Unit tests
/// move their own instead of sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn elapsed(&self) -> Duration;
}

/// The machine's monotonic clock.
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A sustained rate and how many requests may come at once (API.md's burst column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Guests per IP: a burst of 10, or the rate if lower.
    pub fn guest_per_ip(limits: &RateLimits) -> Self {
        let per_minute = limits.guest_per_ip_per_minute();
        Self {
            per_minute,
            burst: per_minute.min(10),
        }
    }

    /// Guests per key: a burst of a tenth of the rate, at least 10.
    pub fn guest_per_key(limits: &RateLimits) -> Self {
        Self::per_key(limits.guest_per_key_per_minute())
    }

    /// Visitor tokens per key: a burst of a tenth of the rate, at least 10.
    pub fn user_token_per_key(limits: &RateLimits) -> Self {
        Self::per_key(limits.user_token_per_key_per_minute())
    }

    fn per_key(per_minute: u32) -> Self {
        Self {
            per_minute,
            burst: (per_minute / 10).max(10),
        }
    }

    /// Nanoseconds between two requests at the sustained rate.
    fn interval_ns(self) -> u64 {
        60_000_000_000 / u64::from(self.per_minute.max(1))
    }
}

/// A refused request: how long until one more would conform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    wait: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds, rounded up, at least 1 (API.md).
    pub fn retry_after_seconds(&self) -> u32 {
        let whole = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        u32::try_from(whole).unwrap_or(u32::MAX).max(1)
    }
}

/// One GCRA cell: the theoretical arrival time, in nanoseconds of the limiter's clock.
type Cell = Arc<AtomicU64>;

/// Takes one request from `cell` at `now`, or says how long to wait.
fn acquire(cell: &AtomicU64, now: u64, rate: Rate) -> Result<(), Limited> {
    let interval = rate.interval_ns();
    let tolerance = interval.saturating_mul(u64::from(rate.burst.max(1) - 1));
    let mut tat = cell.load(Ordering::Acquire);
    loop {
        let start = tat.max(now);
        let ahead = start - now;
        if ahead > tolerance {
            return Err(Limited {
                wait: Duration::from_nanos(ahead - tolerance),
            });
        }
        match cell.compare_exchange_weak(
            tat,
            start.saturating_add(interval),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(()),
            Err(current) => tat = current,
        }
    }
}

/// Gives back a request taken by [`acquire`] (when another limit refused the request).
fn refund(cell: &AtomicU64, rate: Rate) {
    let interval = rate.interval_ns();
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
        Some(tat.saturating_sub(interval))
    });
}

/// A client key's id held inline: copied into a cell's key without an allocation (the
/// `ClientKeyId` is a `String`) and compared without following a pointer.
type KeyBytes = [u8; ClientKeyId::LEN];

/// One cell per client key, never evicted (see the module's comment). Foldhash, not the
/// default SipHash: only ids of keys the directory holds get here, nothing a caller
/// chooses.
type PerKey = papaya::HashMap<KeyBytes, AtomicU64, foldhash::fast::RandomState>;

/// The node's abuse limiter. Off (`WIDGET_AUTH_RATE_LIMITS=off`) it allows everything
/// and keeps no state.
#[derive(Debug)]
pub struct RateLimiter {
    enabled: bool,
    clock: Arc<dyn Clock>,
    /// moka because here eviction is the point: the caller chooses the addresses.
    guest_per_ip: Cache<(KeyBytes, IpAddr), Cell>,
    /// Plain maps: moka recorded every read for an eviction policy these never need
    /// (its `get_with` and the key's clone were most of the limiter's cost, BENCHMARKS.md).
    guest_per_key: PerKey,
    user_token_per_key: PerKey,
}

impl RateLimiter {
    /// The production limiter: the machine's clock, the default bounds.
    pub fn new(enabled: bool) -> Self {
        Self::with(
            enabled,
            DEFAULT_CAPACITY,
            Arc::new(MonotonicClock::default()),
        )
    }

    /// A limiter holding at most `capacity` per-IP entries, timed by `clock`.
    pub fn with(enabled: bool, capacity: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            enabled,
            clock,
            guest_per_ip: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(IDLE_EVICTION)
                .build(),
            guest_per_key: PerKey::default(),
            user_token_per_key: PerKey::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// One guest mint for `key` from `ip`: both the per-IP and the per-key limit must
    /// allow it. A request the per-key limit refuses gives its per-IP share back, so one
    /// busy key does not also drain its visitors' own budgets.
    pub fn guest(&self, key: &ClientKeyId, ip: IpAddr, limits: &RateLimits) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.now_ns();
        let key = key.to_bytes();
        let (per_ip, per_key) = (Rate::guest_per_ip(limits), Rate::guest_per_key(limits));
        let ip_cell = self.guest_per_ip.get_with((key, ip), Cell::default);
        acquire(&ip_cell, now, per_ip)?;
        let cells = self.guest_per_key.pin();
        acquire(cell(&cells, key), now, per_key).inspect_err(|_| refund(&ip_cell, per_ip))
    }

    /// One visitor token minted by `key`'s backend.
    pub fn user_token(&self, key: &ClientKeyId, limits: &RateLimits) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.now_ns();
        let cells = self.user_token_per_key.pin();
        acquire(
            cell(&cells, key.to_bytes()),
            now,
            Rate::user_token_per_key(limits),
        )
    }

    /// Entries held (after pending evictions run): what bounds the limiter's memory.
    pub fn entries(&self) -> u64 {
        self.guest_per_ip.run_pending_tasks();
        let per_key = self.guest_per_key.len() + self.user_token_per_key.len();
        self.guest_per_ip.entry_count() + per_key as u64
    }
}

/// The cell of `key`, made on its first request. Looked up first: inserting builds the
/// entry before it knows whether one is there.
fn cell<'g, G: papaya::Guard>(
    cells: &'g papaya::HashMapRef<'_, KeyBytes, AtomicU64, foldhash::fast::RandomState, G>,
    key: KeyBytes,
) -> &'g AtomicU64 {
    match cells.get(&key) {
        Some(cell) => cell,
        None => cells.get_or_insert_with(key, AtomicU64::default),
    }
}

/// `WIDGET_AUTH_TRUSTED_PROXIES`: the balancers whose `X-Forwarded-For` we believe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated IPs or CIDRs; an empty list trusts nobody.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!("`{entry}` is not an IP address or CIDR like 10.0.0.0/8")
                })?,
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
    /// rightmost `X-Forwarded-For` address that is not itself trusted (each proxy appends
    /// the address it saw, so everything left of the first untrusted one may be forged).
    /// An entry that is not an address stops the walk at the last trusted hop.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        for header in forwarded_for.rev() {
            for entry in header.rsplit(',').map(str::trim) {
                let Some(ip) = parse_forwarded(entry) else {
                    return client;
                };
                client = ip;
                if !self.trusts(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, maybe bracketed or with a port.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A clock the test moves.
    #[derive(Debug, Default)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            let by = u64::try_from(by.as_nanos()).expect("short");
            self.0.fetch_add(by, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn elapsed(&self) -> Duration {
            Duration::from_nanos(self.0.load(Ordering::SeqCst))
        }
    }

    fn limiter(capacity: u64) -> (RateLimiter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (RateLimiter::with(true, capacity, clock.clone()), clock)
    }

    fn key(n: u8) -> ClientKeyId {
        ClientKeyId::generate(
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(u64::from(n)),
        )
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    fn limits(per_ip: u32, per_key: u32, user: u32) -> RateLimits {
        RateLimits::new(per_ip, per_key, user).expect("in bounds")
    }

    #[test]
    fn bursts_follow_api_md() {
        let defaults = RateLimits::default();
        assert_eq!(Rate::guest_per_ip(&defaults).burst, 10);
        assert_eq!(Rate::guest_per_ip(&limits(3, 6000, 6000)).burst, 3);
        assert_eq!(Rate::guest_per_key(&defaults).burst, 600);
        assert_eq!(Rate::guest_per_key(&limits(30, 50, 6000)).burst, 10);
        assert_eq!(Rate::user_token_per_key(&limits(30, 6000, 1000)).burst, 100);
    }

    #[test]
    fn a_burst_is_allowed_at_once_and_the_next_request_is_refused() {
        let (limiter, _) = limiter(100);
        let defaults = RateLimits::default();
        for _ in 0..10 {
            assert!(limiter.guest(&key(1), ip(1), &defaults).is_ok());
        }
        let refused = limiter.guest(&key(1), ip(1), &defaults).unwrap_err();
        // 30 per minute: the next request conforms 2 s later.
        assert_eq!(refused.retry_after_seconds(), 2);
        // Another IP of the same key has its own budget.
        assert!(limiter.guest(&key(1), ip(2), &defaults).is_ok());
    }

    #[test]
    fn the_budget_refills_at_the_sustained_rate() {
        let (limiter, clock) = limiter(100);
        let limits = limits(2, 6000, 6000);
        assert!(limiter.guest(&key(1), ip(1), &limits).is_ok());
        assert!(limiter.guest(&key(1), ip(1), &limits).is_ok());
        assert!(limiter.guest(&key(1), ip(1), &limits).is_err());
        clock.advance(Duration::from_secs(29));
        assert!(limiter.guest(&key(1), ip(1), &limits).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(limiter.guest(&key(1), ip(1), &limits).is_ok());
        assert!(limiter.guest(&key(1), ip(1), &limits).is_err());
    }

    #[test]
    fn the_per_key_limit_holds_across_ips_and_refunds_the_ip_share() {
        let (limiter, clock) = limiter(1000);
        // Per IP 10/min (burst 10); per key 100/min (burst 10, one every 0.6 s).
        let limits = limits(10, 100, 6000);
        for n in 0..10 {
            assert!(limiter.guest(&key(1), ip(n), &limits).is_ok());
        }
        for _ in 0..20 {
            assert!(limiter.guest(&key(1), ip(99), &limits).is_err());
        }
        // 6 s refill the key's burst; IP 99's own budget was never spent by the refused
        // attempts, so it gets all ten (were it spent, it would get one).
        clock.advance(Duration::from_secs(6));
        for _ in 0..10 {
            assert!(limiter.guest(&key(1), ip(99), &limits).is_ok());
        }
        assert!(limiter.guest(&key(1), ip(99), &limits).is_err());
    }

    #[test]
    fn each_key_has_its_own_budgets_even_from_one_ip() {
        // Given two keys, one of which has spent its per-IP and per-key budgets
        let (limiter, _) = limiter(100);
        let limits = limits(3, 10, 10);
        for _ in 0..3 {
            assert!(limiter.guest(&key(1), ip(1), &limits).is_ok());
        }
        assert!(limiter.guest(&key(1), ip(1), &limits).is_err());
        for _ in 0..10 {
            assert!(limiter.user_token(&key(1), &limits).is_ok());
        }
        assert!(limiter.user_token(&key(1), &limits).is_err());
        // Then the other key, from the same IP, still has all of its own
        for _ in 0..3 {
            assert!(limiter.guest(&key(2), ip(1), &limits).is_ok());
        }
        assert!(limiter.guest(&key(2), ip(1), &limits).is_err());
        for _ in 0..10 {
            assert!(limiter.user_token(&key(2), &limits).is_ok());
        }
        // And the cells are one per (key, IP) and one per key and kind
        assert_eq!(limiter.entries(), 2 + 2 + 2);
    }

    #[test]
    fn user_tokens_are_limited_per_key_only() {
        let (limiter, clock) = limiter(100);
        let limits = limits(30, 6000, 60);
        for _ in 0..10 {
            assert!(limiter.user_token(&key(1), &limits).is_ok());
        }
        let refused = limiter.user_token(&key(1), &limits).unwrap_err();
        assert_eq!(refused.retry_after_seconds(), 1);
        assert!(limiter.user_token(&key(2), &limits).is_ok());
        clock.advance(Duration::from_secs(1));
        assert!(limiter.user_token(&key(1), &limits).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        let wait = |ms| Limited {
            wait: Duration::from_millis(ms),
        };
        assert_eq!(wait(1).retry_after_seconds(), 1);
        assert_eq!(wait(0).retry_after_seconds(), 1);
        assert_eq!(wait(1000).retry_after_seconds(), 1);
        assert_eq!(wait(1001).retry_after_seconds(), 2);
        assert_eq!(wait(59_999).retry_after_seconds(), 60);
    }

    #[test]
    fn a_lowered_limit_applies_at_once() {
        let (limiter, _) = limiter(100);
        assert!(limiter.user_token(&key(1), &limits(30, 6000, 6000)).is_ok());
        for _ in 0..9 {
            assert!(limiter.user_token(&key(1), &limits(30, 6000, 1)).is_ok());
        }
        assert!(limiter.user_token(&key(1), &limits(30, 6000, 1)).is_err());
    }

    #[test]
    fn a_flood_of_new_ips_stays_within_the_bound() {
        let (limiter, _) = limiter(1_000);
        let defaults = RateLimits::default();
        for n in 0..20_000 {
            let _ = limiter.guest(&key(1), ip(n), &defaults);
        }
        let entries = limiter.entries();
        assert!(entries <= 1_000 + 1, "{entries} entries");
    }

    #[test]
    fn off_allows_everything_and_keeps_nothing() {
        let limiter = RateLimiter::with(false, 100, Arc::new(ManualClock::default()));
        let limits = limits(1, 1, 1);
        for n in 0..100 {
            assert!(limiter.guest(&key(1), ip(n % 2), &limits).is_ok());
            assert!(limiter.user_token(&key(1), &limits).is_ok());
        }
        assert_eq!(limiter.entries(), 0);
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").expect("valid");
        let peer: IpAddr = "10.1.2.3".parse().expect("ip");
        let untrusted: IpAddr = "203.0.113.9".parse().expect("ip");
        let client = |peer, headers: &[&str]| trusted.client_ip(peer, headers.iter().copied());
        // Untrusted peer: its header is ignored.
        assert_eq!(client(untrusted, &["198.51.100.1"]), untrusted);
        // Trusted peer: the rightmost untrusted entry, skipping trusted hops.
        assert_eq!(
            client(peer, &["1.1.1.1, 198.51.100.1, 192.168.1.7"]),
            "198.51.100.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            client(peer, &["1.1.1.1", "198.51.100.2"]),
            "198.51.100.2".parse::<IpAddr>().expect("ip")
        );
        // No header, or only trusted hops: the last trusted address.
        assert_eq!(client(peer, &[]), peer);
        assert_eq!(
            client(peer, &["10.9.9.9"]),
            "10.9.9.9".parse::<IpAddr>().expect("ip")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(client(peer, &["1.1.1.1, not-an-ip"]), peer);
        // IPv4-mapped IPv6 peers are the IPv4 address.
        assert_eq!(client("::ffff:10.1.2.3".parse().expect("ip"), &[]), peer);
    }

    #[test]
    fn trusted_proxies_refuse_what_is_not_an_address() {
        assert_eq!(
            TrustedProxies::parse("").expect("empty"),
            TrustedProxies::default()
        );
        assert!(TrustedProxies::parse("10.0.0.0/8,::1").is_ok());
        let err = TrustedProxies::parse("10.0.0.0/8, nginx").unwrap_err();
        assert!(err.contains("`nginx`"), "{err}");
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
    }
}
