//! End-to-end tests: the real service (in process, on a real socket) against the emulators
//! over HTTPS, on SQLite and on Postgres.

mod helpers;
// Shared with the process tests in tests/*.rs, which use all of it.
#[allow(dead_code)]
mod service_process;

mod claims;
mod credentials;
mod do_work;
mod downstreams;
mod events;
mod events_delivery;
mod faults;
mod hostile;
mod invocation;
mod key_versions;
mod leaks;
mod leases;
mod sampling;
mod setup;
mod telemetry;
mod tenancy;
mod timer;
mod timer_isolation;
