//! do-work and the row's lease: a grant found dead while the user reconnects is not reported
//! as dead, and a lease taken by do-work outlives its slow work.

use std::time::{Duration, Instant};

use emulators::{Fault, FaultKind};
use serde_json::Value;

use crate::helpers::TestApp;

/// do-work redeems a revoked grant while setup connects the user again: its reauth mark does
/// not apply (the row moved on), so it uses the new grant and answers 200, not 409.
async fn a_grant_replaced_while_found_dead_is_used_not_reported(app: TestApp) {
    let oid = app.connected_user().await;
    app.stack.entra.revoke_user(&app.tenant(), &oid);
    // do-work's redeem is the next token request: it waits 2 s, then finds the token revoked.
    app.stack
        .entra
        .inject(Fault::once(FaultKind::Delay(Duration::from_secs(2))));
    let work = {
        let (client, address, token) = (
            app.client.clone(),
            app.address.clone(),
            app.workload_token(),
        );
        let body = serde_json::json!({"tenantId": app.tenant(), "userId": oid});
        tokio::spawn(async move {
            client
                .post(format!("{address}/api/do-work"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    // Reconnect once do-work holds the lease and waits for Entra.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.row(&oid).await.unwrap().lease_owner.is_none() {
        assert!(Instant::now() < deadline, "do-work never took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let setup = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(setup.status(), 200, "{}", setup.text().await.unwrap());

    let response = work.await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200, "{body}");
    let row = app.row(&oid).await.unwrap();
    assert_eq!(row.status.as_str(), "active");
    assert_eq!(
        Some(app.stored_refresh_token(&oid).await),
        app.stack.entra.latest_refresh_token(&app.tenant(), &oid)
    );
}

crate::on_both_backends!(a_grant_replaced_while_found_dead_is_used_not_reported);
