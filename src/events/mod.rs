//! Grant events (SPEC §6): every change of a grant's state (connected, disconnected, found
//! dead) is told to the app at `OBOVAULT_EVENTS_URL`, signed as the Standard Webhooks
//! specification says.
//!
//! The store writes each event into an outbox table in the same transaction as the change it
//! reports ([`outbox`]); [`delivery`] sends pending events from any instance, with back-off,
//! while `serve` runs and once more at the end of every timer run. Delivery is at least once:
//! an event keeps its `webhook-id` across attempts and is deleted only after a 2xx.

pub mod delivery;
mod event;
pub mod outbox;
pub mod settings;
pub mod signer;

pub use delivery::{Delivery, FlushReport, Sender};
pub use event::{DisconnectedBy, NewEvent};
pub use outbox::EventStore;
pub use settings::EventSettings;
