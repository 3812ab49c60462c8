//! No secret ever leaves: every token, secret and key the emulators issued is searched for in
//! the captured logs (at trace level for our code), in every answer and in the database.

use chrono::Utc;
use emulators::{Fault, FaultKind};
use serde_json::{json, Value};

use crate::helpers::{TestApp, LOGS};

async fn no_issued_secret_appears_in_logs_answers_or_the_database(app: TestApp) {
    let mut answers = String::new();
    let oid = crate::helpers::new_user();
    let token = app.user_token(&oid);
    for response in [
        app.post_setup(&token).await,
        app.post_setup(&token).await,
        app.get_setup(&token).await,
    ] {
        answers.push_str(&response.text().await.unwrap());
    }
    answers.push_str(
        &app.do_work(&oid, json!({"path": "/me"}))
            .await
            .text()
            .await
            .unwrap(),
    );
    answers.push_str(
        &app.do_work(&oid, json!({"path": "/me/../x"}))
            .await
            .text()
            .await
            .unwrap(),
    );
    app.stack.entra.inject(Fault {
        kind: FaultKind::Status(500),
        times: 1,
    });
    app.app.deps.access_tokens.invalidate(&app.key(&oid)).await;
    answers.push_str(&app.do_work(&oid, Value::Null).await.text().await.unwrap());
    app.stack.entra.inject(Fault {
        kind: FaultKind::InvalidClient,
        times: 1,
    });
    answers.push_str(&app.do_work(&oid, Value::Null).await.text().await.unwrap());
    let revoked = app.connected_user().await;
    app.stack.entra.revoke_user(&app.tenant(), &revoked);
    answers.push_str(
        &app.do_work(&revoked, Value::Null)
            .await
            .text()
            .await
            .unwrap(),
    );
    app.seed_users(5, Utc::now() - chrono::Duration::hours(48))
        .await;
    app.app.keys.rotate(&app.key_name()).await.unwrap();
    answers.push_str(&app.run_timer().await.to_string());
    answers.push_str(
        &app.post_setup("eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ4In0.")
            .await
            .text()
            .await
            .unwrap(),
    );
    answers.push_str(&app.delete_setup(&token).await.text().await.unwrap());

    let secrets = app.stack.issued_secrets();
    assert!(
        secrets.len() > 10,
        "the emulators reported what they issued"
    );
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(logs.len() > 1000, "logs were captured");
    let database = dump_database(&app).await;
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
        assert!(
            !answers.contains(secret.as_str()),
            "a secret reached an answer"
        );
        assert!(
            !database.contains(secret.as_str()),
            "a secret reached the database in plain form"
        );
    }
    assert!(
        !logs.contains("eyJ"),
        "something JWT-shaped reached the logs"
    );
}

/// Every text-ish column of every row, as one string.
async fn dump_database(app: &TestApp) -> String {
    let mut dump = String::new();
    let oids = ["user_tokens", "user_token_accesses"];
    for table in oids {
        let query = format!("SELECT * FROM {table}");
        match app.backend {
            crate::helpers::Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&app.database.url).await.unwrap();
                for row in sqlx::query(&query).fetch_all(&pool).await.unwrap() {
                    dump_row(&mut dump, &row);
                }
            }
            crate::helpers::Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&app.database.url).await.unwrap();
                for row in sqlx::query(&query).fetch_all(&pool).await.unwrap() {
                    dump_row(&mut dump, &row);
                }
            }
        }
    }
    dump
}

fn dump_row<R: sqlx::Row>(dump: &mut String, row: &R)
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    for index in 0..row.len() {
        if let Ok(text) = row.try_get::<String, _>(index) {
            dump.push_str(&text);
        } else if let Ok(bytes) = row.try_get::<Vec<u8>, _>(index) {
            dump.push_str(&String::from_utf8_lossy(&bytes));
        }
        dump.push('\n');
    }
}

crate::on_both_backends!(no_issued_secret_appears_in_logs_answers_or_the_database);
