//! setup on fakes: the OBO grant sealed under the tenant's latest key, a reconnection, the
//! refusals.

use super::World;
use crate::domain::TokenStatus;
use crate::idp::IdpError;
use crate::usecase::FlowError;

#[tokio::test]
async fn setup_seals_the_obo_grant_under_the_latest_key_and_a_reconnection_replaces_it() {
    let world = World::new();
    let deps = world.instance();
    let user = World::user(1);
    let first = world.connect(&deps, &user).await;
    assert!(first.created);
    assert_eq!(first.record.key_version, "v1");
    assert_eq!(first.record.scopes, "api://downstream/.default");
    let stored = world.stored_token(&user).await;
    assert!(world.entra.is_live(&stored));

    world.keys.rotate(&first.record.key_name);
    let again = world.connect(&deps, &user).await;
    assert!(!again.created);
    assert_eq!(
        again.record.key_version, "v2",
        "a reconnection seals under the new latest"
    );
    assert!(again.record.revision > first.record.revision);
    assert_ne!(world.stored_token(&user).await, stored);
}

#[tokio::test]
async fn setup_answers_entra_s_demand_for_interaction_and_stores_nothing() {
    let world = World::new();
    let deps = world.instance();
    let user = World::user(1);
    world.entra.fail_next(IdpError::Reauth {
        error: "interaction_required".into(),
        code: Some(50076),
        suberror: None,
        claims: Some("{\"access_token\":{\"acrs\":{\"essential\":true}}}".into()),
    });
    let caller = crate::idp::ValidatedToken {
        tenant_id: user.tenant_id.clone(),
        object_id: Some(user.user_id.clone()),
        app_id: None,
        scopes: Vec::new(),
        roles: Vec::new(),
        app_only: false,
        expires_at: world.clock_now(),
    };
    let assertion = crate::domain::InboundToken::new(user.user_id.to_string());
    let error = crate::usecase::setup::connect(&deps, &caller, &assertion)
        .await
        .unwrap_err();
    assert!(
        matches!(error, FlowError::InteractionRequired { claims: Some(_) }),
        "{error:?}"
    );
    assert!(matches!(
        crate::usecase::setup::status(&deps, &user).await,
        Err(FlowError::NotConnected)
    ));
}

#[tokio::test]
async fn disconnect_removes_the_row_and_a_later_do_work_is_not_connected() {
    let (world, deps, user) = World::with_connected_user().await;
    world.do_work(&deps, &user).await.unwrap();
    assert!(crate::usecase::setup::disconnect(&deps, &user)
        .await
        .unwrap());
    assert!(matches!(
        world.do_work(&deps, &user).await,
        Err(FlowError::NotConnected)
    ));
    assert!(!crate::usecase::setup::disconnect(&deps, &user)
        .await
        .unwrap());
    let (record, _) = {
        world.connect(&deps, &user).await;
        crate::usecase::setup::status(&deps, &user).await.unwrap()
    };
    assert_eq!(record.status, TokenStatus::Active);
}
