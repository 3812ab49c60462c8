//! The three event types and their bodies. A body carries ids and Entra's error codes only:
//! nothing in it could be used to act for the user.

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::domain::UserKey;

/// Who removed a grant (`data.by` of `grant.disconnected`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum DisconnectedBy {
    /// The user, with `DELETE /api/setup`.
    User,
    /// An operator, with `users delete` or `tenants purge`.
    Operator,
}

impl DisconnectedBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Operator => "operator",
        }
    }
}

/// An event about to be written to the outbox.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The `webhook-id`, unique per event and the same on every attempt.
    pub id: String,
    /// `grant.connected`, `grant.disconnected` or `grant.reauth_required`.
    pub event_type: &'static str,
    /// The JSON body exactly as it is signed and sent.
    pub body: String,
}

impl NewEvent {
    /// `grant.connected` after setup; `reconnected` when the user's row existed.
    pub fn connected(key: &UserKey, reconnected: bool) -> Self {
        Self::new(
            "grant.connected",
            key,
            json!({ "reconnected": reconnected }),
        )
    }

    /// `grant.disconnected` after the user's row was deleted.
    pub fn disconnected(key: &UserKey, by: DisconnectedBy) -> Self {
        Self::new("grant.disconnected", key, json!({ "by": by.as_str() }))
    }

    /// `grant.reauth_required` after the grant was found dead; `status_reason` is what the
    /// row stores (`invalid_grant:70043`), `data.reason` is Entra's code (`AADSTS70043`).
    pub fn reauth_required(key: &UserKey, status_reason: &str) -> Self {
        Self::new(
            "grant.reauth_required",
            key,
            json!({ "reason": entra_code(status_reason) }),
        )
    }

    fn new(event_type: &'static str, key: &UserKey, extra: Value) -> Self {
        let mut data = json!({
            "tenantId": key.tenant_id.as_str(),
            "userId": key.user_id.as_str(),
        });
        if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
        let body = json!({
            "type": event_type,
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": data,
        });
        Self {
            // Standard Webhooks' examples use a `msg_` prefix; the rest only has to be unique.
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            event_type,
            body: body.to_string(),
        }
    }
}

/// `invalid_grant:70043` → `AADSTS70043`; a reason without Entra's number (`invalid_grant`,
/// `interaction_required`) is passed on as it is.
fn entra_code(status_reason: &str) -> String {
    match status_reason.rsplit_once(':') {
        Some((_, number)) if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
            format!("AADSTS{number}")
        }
        _ => status_reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TenantId, UserId};

    fn key() -> UserKey {
        UserKey {
            tenant_id: TenantId::parse("11111111-1111-4111-8111-111111111111").unwrap(),
            user_id: UserId::parse("22222222-2222-4222-8222-222222222222").unwrap(),
        }
    }

    #[test]
    fn bodies_follow_the_spec() {
        let event = NewEvent::reauth_required(&key(), "invalid_grant:70043");
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["type"], "grant.reauth_required");
        assert_eq!(body["data"]["reason"], "AADSTS70043");
        assert_eq!(
            body["data"]["tenantId"],
            "11111111-1111-4111-8111-111111111111"
        );
        assert_eq!(
            body["data"]["userId"],
            "22222222-2222-4222-8222-222222222222"
        );
        chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();

        let event = NewEvent::connected(&key(), true);
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["data"]["reconnected"], true);
        let event = NewEvent::disconnected(&key(), DisconnectedBy::Operator);
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["data"]["by"], "operator");
        assert_ne!(
            event.id,
            NewEvent::disconnected(&key(), DisconnectedBy::User).id
        );
    }

    #[test]
    fn reasons_without_a_number_pass_through() {
        assert_eq!(entra_code("interaction_required"), "interaction_required");
        assert_eq!(entra_code("invalid_grant:"), "invalid_grant:");
        assert_eq!(entra_code("invalid_grant:50173"), "AADSTS50173");
    }
}
