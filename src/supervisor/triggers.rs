//! The executor's side of the triggers (issue 18; the decisions are in `core/triggers.rs`):
//! health checks, memory samples, `--watch` and `--build`. What takes time runs off the loop,
//! and its end comes back as an event through one channel: a `--health-http` probe is a task
//! of the loop's runtime, a memory sample a short-lived thread (reading a process's
//! smaps_rollup takes its memory lock, which a process stuck in a page fault can hold for
//! long; the loop must not wait on that). `--health-cmd` and `--build` are processes,
//! started through `spawn` and reaped by the one reaper like hooks.
//!
//! Under steering, a `--health-http` probe reaches the very worker it checks: its connection
//! comes from a port graceful-run bound itself, which the steering program sends to that
//! worker's member (`listen/steer.rs`, "A probe"). The program holds one such rule at a time,
//! so probes connect one after the other; each rule is removed as soon as its connection is
//! established, before the port could be anyone else's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::core::{Event, WorkerId};
use crate::health::{self, Target};
use crate::log::Subject;
use crate::memory::{self, Members};
use crate::watch::Watch;
use crate::{debug, warn};

/// What the off-loop work sends back.
enum Message {
    /// An event for the core.
    Core(Event),
    /// A probe's connection is established: its steering rule can go.
    Connected,
}

/// A `--health-http` probe waiting for its turn.
struct Pending {
    worker: WorkerId,
    member: Option<u32>,
}

pub(super) struct Triggers {
    tx: mpsc::UnboundedSender<Message>,
    rx: mpsc::UnboundedReceiver<Message>,
    watch: Option<Watch>,
    /// `--health-http`: the path, the first stream listener, and the timeout.
    probe: Option<(String, Target, Duration)>,
    /// A probe holds the steering rule.
    connecting: bool,
    queue: VecDeque<Pending>,
    /// A memory sample's thread is still running. smaps_rollup takes the process's mmap lock,
    /// which a `--user` server can keep from us (a fault on a page of a FUSE file that never
    /// answers, with a writer queued behind it): such a thread waits as long as the server
    /// wants. While one runs no other starts, so that the server cannot pile up our threads,
    /// one a second; the core just gets no sample until it ends.
    sampling: Arc<AtomicBool>,
}

impl Triggers {
    pub fn new(watch: Option<Watch>, probe: Option<(String, Target, Duration)>) -> Triggers {
        let (tx, rx) = mpsc::unbounded_channel();
        Triggers {
            tx,
            rx,
            watch,
            probe,
            connecting: false,
            queue: VecDeque::new(),
            sampling: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The next event from off the loop (cancel-safe: a `select!` that picks another branch
    /// loses nothing). Never ready without `--watch`, `--health-http` or `--max-memory`.
    pub async fn next(&mut self, steering: &mut super::steering::Steering) -> Event {
        loop {
            let message = match &mut self.watch {
                Some(watch) => tokio::select! {
                    message = self.rx.recv() => message,
                    change = watch.changed() => {
                        for warning in watch.take_warnings() {
                            warn!(Subject::NONE, "--watch: {warning}");
                        }
                        let paths = change
                            .paths
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect();
                        return Event::Changed {
                            paths,
                            more: change.more + usize::from(change.overflow),
                        };
                    }
                },
                None => self.rx.recv().await,
            };
            match message {
                // The sender lives in self: the channel never closes.
                None => std::future::pending::<()>().await,
                Some(Message::Core(event)) => return event,
                Some(Message::Connected) => {
                    steering.end_probe();
                    self.connecting = false;
                    self.next_probe(steering);
                }
            }
        }
    }

    /// Samples each worker's memory (its process group) on a thread of its own; each sample
    /// comes back as [`Event::Memory`].
    pub fn sample_memory(&self, workers: Vec<(WorkerId, i32)>) {
        if self.sampling.swap(true, Ordering::AcqRel) {
            debug!(Subject::NONE, "the last memory sample is still being taken");
            return;
        }
        let tx = self.tx.clone();
        let sampling = Arc::clone(&self.sampling);
        let spawned = std::thread::Builder::new()
            .name("memory".into())
            .spawn(move || {
                for (worker, pgid) in workers {
                    let sample = memory::sample(Members::Group(pgid));
                    let _ = tx.send(Message::Core(Event::Memory {
                        worker,
                        bytes: sample.bytes,
                    }));
                }
                sampling.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            self.sampling.store(false, Ordering::Release);
            debug!(Subject::NONE, "cannot sample memory: {e}");
        }
    }

    /// Starts (or queues) a `--health-http` probe of `worker`, whose member of the steered
    /// listeners is `member`.
    pub fn probe(
        &mut self,
        worker: WorkerId,
        member: Option<u32>,
        steering: &mut super::steering::Steering,
    ) {
        self.queue.push_back(Pending { worker, member });
        self.next_probe(steering);
    }

    fn next_probe(&mut self, steering: &mut super::steering::Steering) {
        if self.connecting {
            return;
        }
        let Some((path, target, timeout)) = self.probe.clone() else {
            return;
        };
        while let Some(pending) = self.queue.pop_front() {
            let tx = self.tx.clone();
            let worker = pending.worker;
            let routed = match pending.member {
                Some(member) => steering.probe_connect(member),
                None => Ok(None),
            };
            match routed {
                Ok(Some(stream)) => {
                    self.connecting = true;
                    let host = target.host();
                    tokio::spawn(async move {
                        let result = async {
                            let stream = tokio::net::TcpStream::from_std(stream)
                                .map_err(health::Unhealthy::Connect)?;
                            let connected = tokio::time::timeout(timeout, stream.writable()).await;
                            let _ = tx.send(Message::Connected);
                            match connected {
                                Err(_) => return Err(health::Unhealthy::Timeout(timeout)),
                                Ok(Err(e)) => return Err(health::Unhealthy::Connect(e)),
                                Ok(Ok(())) => {}
                            }
                            if let Some(e) = stream.take_error().ok().flatten() {
                                return Err(health::Unhealthy::Connect(e));
                            }
                            health::probe_stream(stream, &path, &host, timeout).await
                        }
                        .await;
                        let _ = tx.send(Message::Core(Event::Checked {
                            worker,
                            result: outcome(result),
                        }));
                    });
                    return;
                }
                Ok(None) => {
                    let (path, target) = (path.clone(), target.clone());
                    tokio::spawn(async move {
                        let result = health::probe(&target, &path, timeout).await;
                        let _ = tx.send(Message::Core(Event::Checked {
                            worker,
                            result: outcome(result),
                        }));
                    });
                }
                Err(e) => {
                    let _ = tx.send(Message::Core(Event::Checked {
                        worker,
                        result: Err(format!("cannot connect to it: {e}")),
                    }));
                }
            }
        }
    }
}

/// A probe's result as the core takes it: the status when there was one (the core judges
/// it), else why not.
fn outcome(result: Result<u16, health::Unhealthy>) -> Result<u16, String> {
    match result {
        Ok(status) => Ok(status),
        Err(health::Unhealthy::Status { code, .. }) => Ok(code),
        Err(e) => Err(e.to_string()),
    }
}
