//! `ctl`: `graceful-run ctl` as a binary of its own, until the main binary dispatches to it;
//! the control tests drive it as a user would.
//!
//! ```text
//! target/debug/examples/ctl --pid 1234 restart --wait
//! ```

fn main() {
    std::process::exit(graceful_run::control::client::main(
        std::env::args_os().collect(),
    ));
}
