//! The shortest path through graceful-run: a probe child reports what it received.

use crate::support::{Gr, code, probe};

#[test]
fn probe_child_gets_its_own_listen_pid() {
    let mut gr = Gr::start(&["-l", "127.0.0.1:0", "--", &probe(), "report"]);
    let pid = gr
        .wait_stdout("pid=")
        .trim_start_matches("pid=")
        .to_string();
    gr.wait_stdout("ready");
    assert_eq!(
        gr.wait_stdout("env.LISTEN_PID="),
        format!("env.LISTEN_PID={pid}")
    );
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}
