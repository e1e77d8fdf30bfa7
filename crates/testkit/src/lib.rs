//! `pagewire-testkit`: the parts of the outside world that tests cannot reach, made faithful.
//!
//! - [`simulator`]: builds Meta webhook bodies the way Meta sends them (batched entries, non-ASCII
//!   escaped as `\uXXXX`, `/` as `\/`), signs them with an app secret and posts them. The `pagewire
//!   simulate` command uses it too.
//! - `receiver` (feature `harness`): an HTTP server on 127.0.0.1 that records what it receives, checks
//!   each Standard Webhooks signature with the `standardwebhooks` crate, and answers with a script of
//!   statuses.
//! - `app` (feature `harness`): `TestApp`, a whole gateway on port 0 with its own SQLite file and a
//!   clock that tests move.
//! - `contract` (feature `contract`): `EventContract`, which validates events against the JSON
//!   Schema of the event contract in `openapi.yaml` (`components.schemas.Event`).
//!
//! Only tests and the `simulate` command depend on this crate.

pub mod simulator;

#[cfg(feature = "harness")]
pub mod app;
#[cfg(feature = "contract")]
pub mod contract;
#[cfg(feature = "fake-graph")]
pub mod graph;
#[cfg(feature = "harness")]
pub mod receiver;

#[cfg(feature = "harness")]
pub use app::{Tenant, TestApp, TestAppBuilder};
#[cfg(feature = "harness")]
pub use receiver::{Received, Receiver};
pub use simulator::{meta_json, post_signed, Kind, MetaBody};
