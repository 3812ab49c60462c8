-- The outbox of grant events (SPEC §6). An event is inserted in the same transaction as the
-- change of user_tokens it reports, so a change is never committed without its event (nor an
-- event without its change). Any instance delivers it; a delivered event is deleted.
CREATE TABLE grant_events (
    -- The Standard Webhooks `webhook-id`: the same on every attempt.
    id              text        PRIMARY KEY,
    event_type      text        NOT NULL,
    -- The exact JSON body signed and sent (ids and codes only, never token material).
    body            text        NOT NULL,
    created_at      timestamptz NOT NULL,
    -- Failed attempts so far, the back-off and the last failure, for operators (`status`).
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_attempt_at timestamptz NULL,
    last_error      text        NULL,
    -- The instance sending the event, until lease_until: two instances never send one event
    -- at the same time, and a crashed sender's lease simply runs out.
    lease_owner     text        NULL,
    lease_until     timestamptz NULL,
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- Delivery claims the oldest due events; the 3-day expiry deletes by age.
CREATE INDEX grant_events_by_age ON grant_events (created_at);
