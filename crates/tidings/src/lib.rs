//! The Tidings binary's library half: configuration and wiring, so tests and tools can start
//! the real server in-process exactly as `tidings serve` does.

pub mod app;
pub mod backup;
pub mod config;
pub mod migrate;
pub mod telemetry;
