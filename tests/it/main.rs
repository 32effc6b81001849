//! Integration tests: one binary (one link step), one module per area. Every test drives the
//! built graceful-run binary as a user would; see `support` for the harness.

mod support;

mod accepting;
mod cli;
mod control;
mod ctl;
mod development;
mod ecosystem;
mod exit_status;
mod handover;
mod handover_edges;
mod handover_servers;
mod init;
mod keepalive;
mod languages;
mod notify_cmd;
mod readiness;
mod restart;
mod security;
mod signals;
mod smoke;
mod sockets;
mod state_machine;
mod steering;
mod terminal;
mod triggers;
mod workers;
