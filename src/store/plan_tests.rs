//! The claim must stay cheap on a big table: 100,000 rows, all on an old key version (the day
//! after a rotation), most of them already re-sealed by earlier batches of the same run.

use std::str::FromStr;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection, Row, SqliteConnection};

use super::harness::with_postgres;
use super::{connect, sql};

/// Rows still on the old version when the plan is checked.
const LEFT: i64 = 100;

/// Fills `user_tokens` with 100,000 rows refreshed an hour ago, one millisecond apart, all but
/// the LEFT newest already on the latest version `v2`: the state of a rotation run near its end
/// (the timer claims the oldest first). A scan in `refreshed_at` order would step over all the
/// re-sealed rows before finding the LEFT due ones.
const FILL_POSTGRES: &str = "
    INSERT INTO user_tokens (tenant_id, user_id, sealed_refresh_token, key_name, key_version,
                             status, scopes, created_at, refreshed_at, revision)
    SELECT 't', 'u' || i, '\\x00'::bytea, 'k', CASE WHEN i > 99900 THEN 'v1' ELSE 'v2' END,
           'active', 's', $1, $1 + i * interval '1 millisecond', 1
    FROM generate_series(1, 100000) AS i";

/// The same rows for SQLite, with timestamps in the store's text format.
const FILL_SQLITE: &str = "
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
    INSERT INTO user_tokens (tenant_id, user_id, sealed_refresh_token, key_name, key_version,
                             status, scopes, created_at, refreshed_at, revision)
    SELECT 't', 'u' || i, x'00', 'k', CASE WHEN i > 99900 THEN 'v1' ELSE 'v2' END,
           'active', 's', '2030-01-01T00:00:00.000000Z',
           printf('2030-01-01T00:%02d:%02d.%03d000Z', i / 60000, i / 1000 % 60, i % 1000), 1
    FROM n";

#[tokio::test]
async fn postgres_claims_through_indexes_reading_only_due_rows() {
    with_postgres(|url| async move {
        check_postgres(url.expose_secret())
            .await
            .expect("postgres plan check");
    })
    .await;
}

async fn check_postgres(url: &str) -> Result<(), sqlx::Error> {
    connect(&SecretString::from(url.to_owned()))
        .await
        .expect("migrate");
    let mut db = PgConnection::connect(url).await?;
    let now = Utc::now();
    sqlx::query(FILL_POSTGRES)
        .bind(now - chrono::Duration::hours(1))
        .execute(&mut db)
        .await?;
    sqlx::query("ANALYZE user_tokens").execute(&mut db).await?;
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", sql::CLAIM_DUE_POSTGRES);
    let row = sqlx::query(&explain)
        .bind("k")
        .bind(-86_400.0_f64)
        .bind("v2")
        .bind("timer")
        .bind(300.0_f64)
        .bind(64_i64)
        .fetch_one(&mut db)
        .await?;
    // The column is `json`; sqlx has no `json` feature here, and its wire form is the text.
    let plan: serde_json::Value =
        serde_json::from_str(&row.try_get_unchecked::<String, _>(0)?).expect("plan is JSON");
    assert_eq!(
        plan[0]["Plan"]["Actual Rows"], 64,
        "a full batch was claimed"
    );
    let mut scans = Vec::new();
    collect_scans(&plan[0]["Plan"], &mut scans);
    assert!(
        scans.iter().all(|(node, ..)| node != "Seq Scan"),
        "{scans:?}"
    );
    let read: f64 = scans.iter().map(|(_, rows, removed)| rows + removed).sum();
    // A scan over refreshed_at alone would step over the 99,900 re-sealed rows.
    assert!(
        read <= (3 * LEFT) as f64,
        "claim read {read} rows: {scans:?}"
    );
    Ok(())
}

/// (node type, actual rows, rows removed by filter) of every scan in an EXPLAIN ANALYZE tree.
fn collect_scans(node: &serde_json::Value, out: &mut Vec<(String, f64, f64)>) {
    let kind = node["Node Type"].as_str().unwrap_or_default();
    if kind.contains("Scan") && node["Relation Name"] == "user_tokens" {
        let number = |field: &str| node[field].as_f64().unwrap_or(0.0);
        let loops = number("Actual Loops").max(1.0);
        out.push((
            kind.to_owned(),
            number("Actual Rows") * loops,
            number("Rows Removed by Filter"),
        ));
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        collect_scans(child, out);
    }
}

#[tokio::test]
async fn sqlite_claims_through_indexes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("plan.db").display());
    connect(&SecretString::from(url.clone()))
        .await
        .expect("migrate");
    let mut db =
        SqliteConnection::connect_with(&SqliteConnectOptions::from_str(&url).expect("url"))
            .await
            .expect("open");
    sqlx::query(FILL_SQLITE)
        .execute(&mut db)
        .await
        .expect("fill");
    sqlx::query("ANALYZE")
        .execute(&mut db)
        .await
        .expect("analyze");
    let explain = format!("EXPLAIN QUERY PLAN {}", sql::CLAIM_DUE_SQLITE);
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&explain)
        .bind("k")
        .bind("-86400.000000 seconds")
        .bind("v2")
        .bind("timer")
        .bind("+300.000000 seconds")
        .bind(64_i64)
        .fetch_all(&mut db)
        .await
        .expect("explain");
    let plan: Vec<&str> = rows.iter().map(|row| row.3.as_str()).collect();
    let uses = |index: &str| plan.iter().any(|line| line.contains(index));
    assert!(
        uses("user_tokens_due_by_age") && uses("user_tokens_due_by_key"),
        "{plan:#?}"
    );
    let full_scan = |line: &&&str| line.starts_with("SCAN user_tokens") && !line.contains("INDEX");
    assert!(!plan.iter().any(|line| full_scan(&line)), "{plan:#?}");
}
