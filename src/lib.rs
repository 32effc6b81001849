//! graceful-run: run a server with graceful stops, zero-downtime restarts and socket
//! activation. The binary's `main` is a thin shell around [`run`], which is in `app`.
//!
//! Module map:
//! - `app`: the wiring from a validated config to the supervisor's loop.
//! - `cli`, `config`: flags and GRACEFUL_RUN_* variables to a validated [`config::Config`].
//! - `listen`: the listening sockets graceful-run holds for the life of the service
//!   (`listen::steer`: a listener per generation in one SO_REUSEPORT group, and the BPF
//!   program that steers new connections among them).
//! - `sock_diag`: the kernel's TCP socket table (`NETLINK_SOCK_DIAG`, as `ss` reads it) and
//!   `TCP_INFO`.
//! - `observe`: a generation's connections, busy or idle, and handshakes in flight.
//! - `spawn`: every fork/exec/fd/signal-mask hazard, in one place.
//! - `child_env`: the environment each generation receives.
//! - `signal`: names, the `--map-signal` table, and receiving signals with their sender.
//! - `reaper`: the one caller of wait(2).
//! - `notify`: sd_notify, from the command and to graceful-run's own supervisor.
//! - `supervisor`: the one task that owns every process and decides everything
//!   (`restart`: generations, readiness, backoff; `stop`: the stop sequence and leftovers;
//!   `terminal`: job control).
//! - `accepting`: which listeners a generation waits on, from /proc (`--ready accepting`).
//! - `process`: facts from /proc and the terminal (descendants, leftovers, foreground).
//! - `exit`: every exit status, decided in one place.
//! - `log`: graceful-run's own lines on stderr, text or JSON, never blocking.
//! - `control`: `graceful-run ctl` and the control socket it talks to.
//! - `doc`: the reference sections shared by `--help` and the man page.
//! - `pid_file`: `--pid-file`.
//! - `private_dir`: the root-owned directory of the generations' NOTIFY_SOCKETs, worked on
//!   through descriptors only.
//! - `private_dir`: the root-owned directory of the generations' NOTIFY_SOCKETs, worked on
//!   through descriptors only.
//! - `random`: unpredictable names for files in shared directories.
//! - `cpus`: the CPUs graceful-run may use (`--workers auto`).
//! - `memory`: the PSS of a process group or tree (`--max-memory`).
//! - `health`: the HTTP probe graceful-run sends itself (`--health-http`).
//! - `watch`: one event per burst of file changes (`--watch`).

pub mod accepting;
pub mod app;
pub mod child_env;
pub mod cli;
pub mod config;
pub mod control;
pub mod cpus;
pub mod doc;
pub mod exit;
pub mod health;
pub mod listen;
pub mod log;
pub mod memory;
pub mod notify;
pub mod observe;
pub mod pid_file;
pub mod policy;
pub mod private_dir;
pub mod proc_owner;
pub mod process;
pub mod random;
pub mod reaper;
pub mod signal;
pub mod sock_diag;
pub mod spawn;
pub mod supervisor;
pub mod text;
pub mod watch;

pub use app::run;
