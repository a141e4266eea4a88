//! Integration tests: real `lanes` processes against the real RabbitMQ and PostgreSQL.
//! Each test gets its own prefix and database (see `helpers::TestApp`), so they run in parallel.

mod bad_input;
mod blocked;
mod broker_defs;
mod browser;
mod chaos;
mod dashboard;
mod deploy;
mod end_to_end;
mod execlog;
mod executor;
mod faults;
mod helpers;
mod hostile;
mod leader;
mod listing;
mod management;
mod memory;
mod monitoring;
mod openapi;
mod ordering;
mod outside;
mod own_tasks;
mod pool;
mod proxy;
mod random_order;
mod retention;
mod retries;
mod secrets;
mod steer;
mod store;
mod testdb;
mod tls;
mod tokens;
mod ui;
