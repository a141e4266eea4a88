//! lanes: a task system over RabbitMQ and PostgreSQL with per-resource order and exclusion.
//!
//! For library users: register your own task handlers (`tasks::Registry`), run a worker with
//! them (`worker::run`), and run the roles (`run_server`, `run_worker`, `run_up`). The wire
//! formats are in `protocol`, the settings in `config`. `broker` and `store` are the building
//! blocks the server side is made of, public for tools that talk to them directly, and so is
//! `routing` (the Router, for the bench's simulation).

pub mod allocator;
pub mod broker;
pub mod config;
pub mod limit;
pub mod protocol;
pub mod schedule;
pub mod storable;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;

/// Named API tokens and their scopes (for `lanes token new`).
pub use api::tokens;
pub mod worker;

mod api;
mod backoff;
mod roles;
mod server;

pub use roles::{run_server, run_up, run_worker, shutdown_on_signals};
/// The Dispatcher's routing decisions, pure code: public so that `lanes bench --simulate` can
/// run the real Router without a broker.
pub use server::routing;
pub use server::ServerError;

/// The README's Rust examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
