//! Writing a grant event in the transaction of the change it reports, and waking this
//! process's delivery task once that transaction committed.

use std::sync::Arc;

use sqlx::{Pool, Transaction};
use tokio::sync::Notify;

use crate::domain::UserKey;
use crate::events::{DisconnectedBy, NewEvent};
use crate::store::{transaction, Conn, Exec, Param, StoreBackend, StoreError};

/// Whether grant changes write events, and whom to tell when they did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Emitter {
    /// `Some` when events are on: notified after an event was committed.
    wake: Option<Arc<Notify>>,
}

impl Emitter {
    /// With `Some(wake)`, events are on.
    pub(crate) fn new(wake: Option<Arc<Notify>>) -> Self {
        Self { wake }
    }

    /// Notified after this process committed an event; `None` when events are off.
    pub(crate) fn wake(&self) -> Option<Arc<Notify>> {
        self.wake.clone()
    }

    /// Whether events are on.
    pub(crate) fn is_on(&self) -> bool {
        self.wake.is_some()
    }

    /// Wakes the delivery task after a committed event.
    pub(crate) fn notify(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    /// Commits `tx`; when the change `wrote` and events are on, `event()` is written in it
    /// first and the delivery task woken after the commit.
    pub(crate) async fn commit<D: Exec>(
        &self,
        mut tx: Transaction<'static, D::Db>,
        wrote: bool,
        event: impl FnOnce() -> NewEvent,
    ) -> Result<(), StoreError> {
        let emits = wrote && self.is_on();
        if emits {
            insert::<D>(&mut tx, &event()).await?;
        }
        tx.commit().await?;
        if emits {
            self.notify();
        }
        Ok(())
    }
}

/// Writes `event` on `conn`, inside the caller's transaction; due at once.
pub(crate) async fn insert<D: Exec>(
    conn: &mut Conn<D>,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    let params = [
        Param::Text(&event.id),
        Param::Text(event.event_type),
        Param::Text(&event.body),
    ];
    D::execute(conn, D::OUTBOX.insert, &params).await?;
    Ok(())
}

/// Deletes one user's row and access history (ON DELETE CASCADE; `foreign_keys` on in
/// SQLite), with a `grant.disconnected` when events are on; `false` when there was no row.
/// `DELETE /api/setup` (`by: user`) and `users delete` (`by: operator`).
pub(crate) async fn delete_user<D: StoreBackend>(
    pool: &Pool<D::Db>,
    emitter: &Emitter,
    key: &UserKey,
    by: DisconnectedBy,
) -> Result<bool, StoreError> {
    let mut tx = transaction(pool).await?;
    let params = [Param::Row(key.into())];
    let existed = D::execute(&mut tx, super::sql::DELETE_USER, &params).await? > 0;
    emitter
        .commit::<D>(tx, existed, || NewEvent::disconnected(key, by))
        .await?;
    Ok(existed)
}
