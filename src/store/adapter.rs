//! The `TokenStore` implementation both adapters share word for word.
//!
//! The SQL is common (`sql.rs`); what differs between Postgres and SQLite is how a timestamp is
//! bound and read (`Stamp`, `stamp`, `unstamp`), how a span of time is bound (`span`,
//! `span_back`), the statements that read the database's clock or differ otherwise
//! (`CLAIM_DUE`, `ACQUIRE_LEASE`, `EXTEND_LEASE`, `RECORD_FAILURE`, `SUMMARY`, `TRIM_ACCESSES`), how a batch of grants is saved (`save_many`) and the `Steps`
//! helpers. Each adapter module defines those items and invokes [`token_store_impl!`], whose
//! body resolves them in that module.

/// Implements `TokenStore` for an adapter type whose module provides `keyed`, `keyed_as`,
/// `record`, `Raw`, `Stamp`, `stamp`, `unstamp`, `span`, `span_back`, `CLAIM_DUE`, `ACQUIRE_LEASE`,
/// `EXTEND_LEASE`, `RECORD_FAILURE`, `SUMMARY`, `TRIM_ACCESSES`, `Steps` and an
/// inherent `save_many` (Postgres: one `UNNEST` statement; SQLite: one transaction), plus the
/// outbox's `Events` and `insert_event` of its backend.
macro_rules! token_store_impl {
    ($store:ty) => {
        #[async_trait]
        impl TokenStore for $store {
            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn connect(
                &self,
                key: &UserKey,
                grant: &SealedGrant,
                scopes: &str,
                now: DateTime<Utc>,
            ) -> Result<Connected, StoreError> {
                // Single statements, no read-then-write transaction: a deferred SQLite
                // transaction that reads first can fail with SQLITE_BUSY_SNAPSHOT when it
                // upgrades to a writer.
                steps::connect(self, key, grant, scopes, now).await
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn find(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
                self.find_row(key).await
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn delete(&self, key: &UserKey) -> Result<bool, StoreError> {
                // The access history goes with the row (ON DELETE CASCADE; foreign_keys on in SQLite).
                let mut tx = self.pool.begin().await?;
                let done = keyed(sql::DELETE, key).execute(&mut *tx).await?;
                let existed = done.rows_affected() > 0;
                if existed && self.events.is_some() {
                    let event = NewEvent::disconnected(key, DisconnectedBy::User);
                    insert_event(&mut tx, &event).await?;
                }
                tx.commit().await?;
                self.wake_delivery(existed);
                Ok(existed)
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn acquire_lease(
                &self,
                key: &UserKey,
                lease: &Lease,
            ) -> Result<LeaseAttempt, StoreError> {
                steps::acquire_lease(self, key, lease).await
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn extend_lease(
                &self,
                key: &UserKey,
                expected_revision: i64,
                lease: &Lease,
            ) -> Result<bool, StoreError> {
                let done = keyed(EXTEND_LEASE, key)
                    .bind(&lease.owner)
                    .bind(span(lease.duration))
                    .bind(expected_revision)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn release_lease(&self, key: &UserKey, owner: &str) -> Result<(), StoreError> {
                keyed(sql::RELEASE_LEASE, key)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            #[tracing::instrument(skip_all, fields(saves = saves.len()))]
            async fn save_grants(
                &self,
                saves: &[GrantSave<'_>],
                owner: &str,
            ) -> Result<Vec<bool>, StoreError> {
                if saves.is_empty() {
                    return Ok(Vec::new());
                }
                self.save_many(saves, owner).await
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn mark_reauth_required(
                &self,
                key: &UserKey,
                expected_revision: i64,
                reason: &str,
                owner: &str,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = keyed(sql::MARK_REAUTH_REQUIRED, key)
                    .bind(expected_revision)
                    .bind(reason)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                let marked = done.rows_affected() == 1;
                if marked && self.events.is_some() {
                    insert_event(&mut tx, &NewEvent::reauth_required(key, reason)).await?;
                }
                tx.commit().await?;
                self.wake_delivery(marked);
                Ok(marked)
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %failure.row.tenant_id, user.id = %failure.row.user_id))]
            async fn record_failure(&self, failure: &Failure<'_>) -> Result<bool, StoreError> {
                let done = sqlx::query(RECORD_FAILURE)
                    .bind(failure.row.tenant_id)
                    .bind(failure.row.user_id)
                    .bind(failure.owner)
                    .bind(failure.error_code)
                    .bind(span(failure.retry_in))
                    .bind(failure.expected_revision)
                    .bind(i32::from(failure.counts))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn key_names(&self) -> Result<Vec<String>, StoreError> {
                Ok(sqlx::query_scalar(sql::KEY_NAMES)
                    .fetch_all(&self.pool)
                    .await?)
            }

            #[tracing::instrument(skip_all, fields(key.name = %claim.key_name, limit = claim.limit))]
            async fn claim_due(&self, claim: &DueClaim) -> Result<Claimed, StoreError> {
                if claim.limit <= 0 {
                    return Ok(Claimed::default());
                }
                let raws: Vec<Raw> = sqlx::query_as(CLAIM_DUE)
                    .bind(&claim.key_name)
                    .bind(claim.refresh_after.map(span_back))
                    .bind(&claim.latest_version)
                    .bind(&claim.lease.owner)
                    .bind(span(claim.lease.duration))
                    .bind(claim.limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(claimed(raws, unstamp))
            }

            #[tracing::instrument(skip_all, fields(records = records.len()))]
            async fn record_accesses(&self, records: &[AccessRecord], keep: i64) -> Result<(), StoreError> {
                if records.is_empty() {
                    return Ok(());
                }
                // The first statement writes, so a SQLite transaction takes the write lock up
                // front (waiting under busy_timeout) rather than upgrading from a read snapshot.
                let mut tx = self.pool.begin().await?;
                for access in records {
                    keyed(sql::INSERT_ACCESS, &access.key)
                        .bind(stamp(access.at))
                        .bind(&access.caller_app_id)
                        .bind(&access.method)
                        .bind(&access.path)
                        .bind(access.downstream_status)
                        .bind(access.refreshed)
                        .bind(access.caller_tenant_id.as_ref().map(crate::domain::TenantId::as_str))
                        .bind(access.downstream.as_deref())
                        .execute(&mut *tx)
                        .await?;
                }
                for user in distinct_users(records) {
                    keyed(TRIM_ACCESSES, user)
                        .bind(keep.max(0))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
            async fn recent_accesses(
                &self,
                key: &UserKey,
                limit: i64,
            ) -> Result<Vec<AccessRecord>, StoreError> {
                let raws: Vec<RawAccess<Stamp>> = keyed_as(sql::RECENT_ACCESSES, key)
                    .bind(limit.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                raws.into_iter().map(|raw| raw.into_access(unstamp)).collect()
            }

            #[tracing::instrument(skip_all)]
            async fn status_report(&self) -> Result<StatusReport, StoreError> {
                let by_status = sqlx::query_as(sql::COUNT_BY_STATUS)
                    .fetch_all(&self.pool)
                    .await?;
                let by_key_version: Vec<(String, String, i64)> = sqlx::query_as(sql::COUNT_BY_KEY_VERSION)
                    .fetch_all(&self.pool)
                    .await?;
                let (oldest, leased, backing_off): (Option<Stamp>, i64, i64) =
                    sqlx::query_as(SUMMARY)
                        .fetch_one(&self.pool)
                        .await?;
                Ok(StatusReport {
                    by_status,
                    by_key_version: by_key_version
                        .into_iter()
                        .map(KeyVersionCount::from)
                        .collect(),
                    oldest_refreshed_at: oldest.map(unstamp).transpose()?,
                    leased,
                    backing_off,
                })
            }

            fn events(&self) -> Arc<dyn EventStore> {
                Arc::new(Events::new(self.pool.clone(), self.events.clone()))
            }
        }

        impl $store {
            /// With `Some`, grant changes write their events and notify the delivery task.
            pub(super) fn with_events(mut self, wake: Option<Arc<Notify>>) -> Self {
                self.events = wake;
                self
            }

            /// Wakes this process's delivery task after a committed event.
            fn wake_delivery(&self, wrote: bool) {
                if let (true, Some(wake)) = (wrote, &self.events) {
                    wake.notify_one();
                }
            }
        }
    };
}

pub(super) use token_store_impl;
