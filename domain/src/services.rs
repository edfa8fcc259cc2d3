//! What the aggregate needs from outside: the clock. Passing it in keeps every handler
//! deterministic, so tests pin time and assert exact grace ends and cut-offs.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock, for the running service.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always says the same time, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The aggregate's `Services`.
#[derive(Clone)]
pub struct ClientKeyServices {
    clock: Arc<dyn Clock>,
}

impl ClientKeyServices {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }

    /// Command time, truncated to whole seconds: event times and revocation cut-offs are
    /// compared with JWT `iat` values, which are whole seconds.
    pub fn now(&self) -> DateTime<Utc> {
        let now = self.clock.now();
        DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
    }
}

impl fmt::Debug for ClientKeyServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeyServices").finish_non_exhaustive()
    }
}
