//! Putting client keys and events where the measurements need them: through the admin
//! API (the load scenarios, as a user would), or straight into the events table (the
//! replay and memory measurements, which need far more than an API-seeded run allows).

use domain::{
    AllowList, ClientKeyEvent, ClientKeyId, OriginPattern, PublicKey, SecretKey, Text, TokenPolicy,
    WidgetConfig,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use sqlx::Connection;

pub const ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone)]
pub struct SeededKey {
    pub id: String,
    pub public_key: String,
    pub secret_key: String,
    pub origin: String,
}

/// A fresh PostgreSQL database; returns its URL.
pub async fn create_database(name: &str) -> anyhow::Result<String> {
    let mut conn = sqlx::PgConnection::connect(ADMIN_DATABASE_URL).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    // Without TLS, like pgbench below (`PGSSLMODE=disable`): on the loopback interface
    // encryption measures rustls and OpenSSL, not widget-auth or PostgreSQL.
    Ok(format!(
        "postgres://postgres@127.0.0.1:5432/{name}?sslmode=disable"
    ))
}

pub async fn drop_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(ADMIN_DATABASE_URL).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// `count` keys created through `POST /internal/v1/client-keys`, 32 at a time.
pub async fn through_admin(
    internal: &str,
    admin_token: &str,
    count: usize,
) -> anyhow::Result<Vec<SeededKey>> {
    let client = reqwest::Client::new();
    stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                let origin = format!("https://site{i}.bench.test");
                let created: Value = client
                    .post(format!("{internal}/internal/v1/client-keys"))
                    .bearer_auth(admin_token)
                    .json(&json!({"name": format!("bench {i}"), "origins": [origin]}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let field = |name: &str| created[name].as_str().unwrap_or_default().to_owned();
                anyhow::Ok(SeededKey {
                    id: field("id"),
                    public_key: field("public_key"),
                    secret_key: field("secret_key"),
                    origin,
                })
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await
}

/// Writes `keys` client keys with `events_per_key` events each straight into the events
/// table (a creation, then origin changes), in large batches. Returns the event count.
pub async fn events_directly(
    database_url: &str,
    keys: usize,
    events_per_key: usize,
) -> anyhow::Result<u64> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?;
    let mut rng = rand::rng();
    let at = chrono::Utc::now();
    let metadata =
        json!({"actor": "bench", "at": at.to_rfc3339(), "request_id": "seed"}).to_string();
    let mut batch: Vec<(String, i64, String, String)> = Vec::with_capacity(20_000);
    let mut written = 0u64;
    for k in 0..keys {
        let id = ClientKeyId::generate(&mut rng);
        let origin = |j: usize| {
            OriginPattern::parse(&format!("https://s{k}-{j}.bench.test"))
                .map_err(anyhow::Error::msg)
        };
        let created = ClientKeyEvent::ClientKeyCreated {
            id: id.clone(),
            name: Text::parse(&format!("seeded {k}")).map_err(anyhow::Error::msg)?,
            public_key: PublicKey::generate(&mut rng),
            secret_key: SecretKey::generate(&mut rng).fingerprint(),
            origins: AllowList::new(vec![origin(0)?]),
            config: WidgetConfig::default(),
            token_policy: TokenPolicy::default(),
            at,
        };
        batch.push((
            id.as_str().to_owned(),
            1,
            created.name().to_owned(),
            serde_json::to_string(&created)?,
        ));
        for sequence in 2..=events_per_key {
            let event = ClientKeyEvent::OriginsChanged {
                origins: AllowList::new(vec![origin(sequence)?]),
            };
            batch.push((
                id.as_str().to_owned(),
                sequence as i64,
                event.name().to_owned(),
                serde_json::to_string(&event)?,
            ));
        }
        if batch.len() >= 20_000 || k + 1 == keys {
            written += insert(&pool, &batch, &metadata).await?;
            batch.clear();
        }
    }
    pool.close().await;
    Ok(written)
}

async fn insert(
    pool: &sqlx::PgPool,
    rows: &[(String, i64, String, String)],
    metadata: &str,
) -> anyhow::Result<u64> {
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let sequences: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
    let done = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'ClientKey', id, seq, kind, '1.0', payload::jsonb, $5::jsonb \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(id, seq, kind, payload)",
    )
    .bind(&ids)
    .bind(&sequences)
    .bind(&types)
    .bind(&payloads)
    .bind(metadata)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
