//! PostgreSQL's group: one statement,
//!
//! ```sql
//! INSERT INTO events ... SELECT ... FROM UNNEST($1, ..., $7) ON CONFLICT DO NOTHING RETURNING ...
//! ```
//!
//! one round trip and one WAL flush. A statement is atomic, so the whole group is durable
//! when it returns.

use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

use super::{GroupWriter, NewEvent};

/// Statements in flight at once. While one group waits for its WAL flush, the next
/// gathers; a few of them keep PostgreSQL's own group commit busy without taking the
/// whole pool (the feed, the token ledger and loads need connections too).
const COMMITTERS: usize = 4;

const INSERT_GROUP: &str = "INSERT INTO events \
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
     SELECT t, id, seq, et, ev, p::jsonb, m::jsonb \
     FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) \
     AS r(t, id, seq, et, ev, p, m) \
     ON CONFLICT DO NOTHING \
     RETURNING aggregate_id, sequence";

impl GroupWriter for PgPool {
    type Reads = PostgresEventRepository;

    const COMMITTERS: usize = COMMITTERS;

    fn reads(&self) -> PostgresEventRepository {
        PostgresEventRepository::new(self.clone())
    }

    async fn insert(&self, group: &[NewEvent]) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let column = |f: fn(&NewEvent) -> &str| group.iter().map(f).collect::<Vec<&str>>();
        sqlx::query_as(INSERT_GROUP)
            .bind(column(|e| e.aggregate_type))
            .bind(column(|e| &e.aggregate_id))
            .bind(group.iter().map(|e| e.sequence).collect::<Vec<i64>>())
            .bind(column(|e| &e.event_type))
            .bind(column(|e| &e.event_version))
            .bind(column(|e| &e.payload))
            .bind(column(|e| &e.metadata))
            .fetch_all(self)
            .await
    }
}
