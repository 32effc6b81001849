//! One worker's way from a spawn to serving: [`Launch`] (the spawn is asked for), [`Boot`]
//! (it runs, not ready yet), [`Up`] (ready, serving). Each is its own type, and each handler
//! consumes the value and returns what it became, so a worker cannot be ready and booting at
//! once, nor keep a deadline that no longer applies. What happens once it is told to stop is in
//! `retire.rs`.

use std::time::{Duration, Instant};

use super::Cx;
use super::protocol::*;
use super::triggers::{self, Watches};
use crate::accepting::Blind;
use crate::exit::ChildExit;
use crate::log::Subject;
use crate::policy::Ready;

/// `--ready accepting`: looks for a waiting process come every PROBE_FIRST for the first
/// PROBE_FAST_LOOKS (a server that waits soon after it starts is seen within about a
/// millisecond), then twice as far apart each time, up to PROBE_MAX (one that boots for
/// seconds costs about 20 looks a second, some 0.6% of a core).
pub const PROBE_FIRST: Duration = Duration::from_millis(1);
pub const PROBE_FAST_LOOKS: u32 = 10;
pub const PROBE_MAX: Duration = Duration::from_millis(50);
/// `--ready accepting`: a worker not seen waiting on its sockets by then is warned about...
pub const PROBE_WARN_AFTER: Duration = Duration::from_secs(5);
/// ...once that many looks in a row could see all of its processes and did not see it wait:
/// on a loaded machine, looks that took too long (and could not see) come in runs, and one
/// look that ends such a run is not enough to say it does not wait.
pub const PROBE_WARN_LOOKS: u32 = 3;

/// A worker's main process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Proc {
    pub id: WorkerId,
    pub generation: GenId,
    pub slot: u32,
    pub pid: i32,
    pub started: Instant,
    /// Its main process was reaped.
    pub exited: Option<ChildExit>,
    /// Its member of the steered listeners' groups, held until all its processes are gone.
    pub member: Option<u32>,
}

impl Proc {
    pub fn subject(&self, several: bool) -> Subject {
        Subject::worker(self.generation, self.slot, self.pid, several)
    }
}

/// A worker whose spawn was asked for, waiting for the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Launch {
    pub id: WorkerId,
    pub generation: GenId,
    pub slot: u32,
    pub ticket: Ticket,
    pub member: Option<u32>,
}

impl Launch {
    /// Asks for a new worker of `generation` in `slot`, on steered listeners' `member`.
    pub fn ask(
        cx: &mut Cx,
        generation: GenId,
        slot: u32,
        reset_nonblocking: bool,
        member: Option<u32>,
    ) -> Launch {
        let id = cx.new_worker();
        let notify = match cx.s.policy.ready {
            // Its pings come on the NOTIFY_SOCKET: without one, it would be found hung.
            _ if cx.s.policy.watchdog.is_some() => NotifyNeed::Required,
            Ready::Notify => NotifyNeed::Required,
            Ready::Auto => NotifyNeed::Wanted,
            Ready::Accepting | Ready::After(_) => NotifyNeed::None,
        };
        let ticket = cx.ask(Question::Spawn {
            worker: id,
            generation,
            slot,
            reset_nonblocking,
            notify,
            member,
        });
        Launch {
            id,
            generation,
            slot,
            ticket,
            member,
        }
    }

    /// The spawn's answer: a booting worker, or the exit code the failure stands for.
    pub fn started(self, cx: &mut Cx, spawned: Result<Spawned, i32>) -> Result<Boot, i32> {
        let spawned = spawned?;
        let proc = Proc {
            id: self.id,
            generation: self.generation,
            slot: self.slot,
            pid: spawned.pid,
            started: cx.now,
            exited: None,
            member: if spawned.shared { None } else { self.member },
        };
        log!(
            cx,
            Info,
            proc.subject(cx.several()),
            "started {}",
            spawned.executable
        );
        let lifetime = triggers::lifetime(cx, spawned.random);
        if let Some(why) = spawned.notify_failed {
            // Readiness is still seen when it waits on its sockets.
            log!(
                cx,
                Warn,
                proc.subject(cx.several()),
                "no NOTIFY_SOCKET ({why}): READY=1 cannot be heard"
            );
        }
        Ok(Boot::new(cx, proc, lifetime))
    }
}

/// How a booting worker proves it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Readiness {
    /// READY=1 only (or `--ready accepting` with no stream listener: ready at once).
    Notify,
    /// Ready if still running at `at`.
    After { at: Instant },
    /// Looking at its processes for one waiting on every stream listener.
    Probing(Probing),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Probing {
    pub look: Look,
    pub interval: Duration,
    pub looks: u32,
    /// Looks in a row that could see all of its processes (and found it not waiting).
    pub clear_looks: u32,
    pub warned: bool,
    /// Why the latest look could not see some of its processes (not dumpable, another
    /// user's, or a look that took too long: that one passes, so each look says it anew).
    pub blind: Option<&'static str>,
    /// Why it could not be seen was said (once, at the first blind look).
    pub said_blind: bool,
    /// A TCP listener of its own its processes hold (it binds a port itself), as seen by the
    /// looks after PROBE_WARN_AFTER.
    pub itself: Option<std::net::SocketAddr>,
}

/// The next look at a booting worker: when, or the question already asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Look {
    At(Instant),
    Asked(Ticket),
}

/// A worker that runs and is not ready yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Boot {
    pub proc: Proc,
    /// Not ready by then: stopped, and counted as a failure.
    pub deadline: Instant,
    pub readiness: Readiness,
    /// Its `--max-lifetime`, drawn at its start.
    pub lifetime: Option<Duration>,
}

/// What a booting worker became.
pub(super) enum Booted {
    Still(Boot),
    Ready(Up),
    /// Not ready by its deadline: to be stopped.
    TimedOut(Boot),
}

impl Boot {
    fn new(cx: &mut Cx, proc: Proc, lifetime: Option<Duration>) -> Boot {
        let now = cx.now;
        let readiness = match cx.s.policy.ready {
            Ready::After(delay) => Readiness::After {
                at: super::later(now, delay),
            },
            Ready::Notify => Readiness::Notify,
            Ready::Accepting | Ready::Auto if cx.s.stream_listeners => {
                Readiness::Probing(Probing {
                    look: Look::At(now + PROBE_FIRST),
                    interval: PROBE_FIRST,
                    looks: 0,
                    clear_looks: 0,
                    warned: false,
                    blind: None,
                    said_blind: false,
                    itself: None,
                })
            }
            // Nothing to wait on: ready at once.
            Ready::Accepting | Ready::Auto => Readiness::After { at: now },
        };
        Boot {
            proc,
            deadline: super::later(now, cx.s.policy.ready_timeout),
            readiness,
            lifetime,
        }
    }

    /// EXTEND_TIMEOUT_USEC from its processes: its readiness deadline is at least that far.
    pub fn extend(&mut self, cx: &mut Cx, usec: u64) {
        let wanted = super::later(cx.now, Duration::from_micros(usec));
        if wanted > self.deadline {
            log!(
                cx,
                Info,
                self.proc.subject(cx.several()),
                "asks for more time to become ready: {} from now",
                super::format_duration(Duration::from_micros(usec))
            );
            self.deadline = wanted;
        }
    }

    pub fn deadline(&self) -> Instant {
        match self.readiness {
            Readiness::Notify
            | Readiness::Probing(Probing {
                look: Look::Asked(_),
                ..
            }) => self.deadline,
            Readiness::After { at } => at.min(self.deadline),
            Readiness::Probing(Probing {
                look: Look::At(at), ..
            }) => at.min(self.deadline),
        }
    }

    /// Whatever is due at `cx.now`: the readiness deadline, a `--ready` duration, a look.
    pub fn expire(mut self, cx: &mut Cx) -> Booted {
        let now = cx.now;
        // A `--ready` duration over before the readiness deadline counts, even when both
        // passed before the step (the clock can overshoot both).
        let ready_at = match self.readiness {
            Readiness::After { at } if at <= now && at < self.deadline => Some(at),
            _ => None,
        };
        if self.deadline <= now && ready_at.is_none() {
            return Booted::TimedOut(self);
        }
        match &mut self.readiness {
            Readiness::After { .. } if ready_at.is_some() => {
                let how = match cx.s.policy.ready {
                    Ready::After(_) => "still running after --ready",
                    _ => "no stream socket to wait on",
                };
                return Booted::Ready(self.ready(cx, how));
            }
            Readiness::Probing(probing) => {
                if let Look::At(at) = probing.look
                    && at <= now
                {
                    probing.look = Look::Asked(cx.ask(Question::Probe {
                        worker: self.proc.id,
                        pgid: self.proc.pid,
                        member: self.proc.member,
                        diagnose: now >= self.proc.started + PROBE_WARN_AFTER,
                    }));
                }
            }
            _ => {}
        }
        Booted::Still(self)
    }

    /// The answer to a look: ready when it waits on every stream listener (or, `accepted`,
    /// was seen accepting a connection from one it does not wait on), else the next look,
    /// further off; a warning once it has taken long.
    pub fn probed(
        mut self,
        cx: &mut Cx,
        missing: Vec<String>,
        blind: Option<Blind>,
        itself: Option<std::net::SocketAddr>,
        accepted: bool,
    ) -> Booted {
        let now = cx.now;
        let Readiness::Probing(probing) = &mut self.readiness else {
            return Booted::Still(self);
        };
        if missing.is_empty() {
            let how = if accepted {
                "accepting: it accepted a connection"
            } else {
                "accepting"
            };
            return Booted::Ready(self.ready(cx, how));
        }
        probing.looks += 1;
        probing.clear_looks = if blind.is_some() {
            0
        } else {
            probing.clear_looks + 1
        };
        if probing.looks >= PROBE_FAST_LOOKS {
            probing.interval = (probing.interval * 2).min(PROBE_MAX);
        }
        probing.look = Look::At(now + probing.interval);
        probing.blind = blind.as_ref().map(Blind::cause);
        probing.itself = itself.or(probing.itself);
        if let Some(why) = blind
            && !std::mem::replace(&mut probing.said_blind, true)
        {
            // Said once, at once: waiting for it would only delay the same news.
            let advice = why.advice();
            log!(cx, Warn, self.proc.subject(cx.several()), "{why}: {advice}");
        }
        // The usual mistake, said once it has taken long; unless the look could not see
        // (already said, and then "not waiting" would be a guess).
        if !probing.warned
            && now >= self.proc.started + PROBE_WARN_AFTER
            && probing.clear_looks >= PROBE_WARN_LOOKS
        {
            probing.warned = true;
            let missing = missing.join(", ");
            let after = super::format_duration(PROBE_WARN_AFTER);
            match probing.itself {
                Some(address) => log!(
                    cx,
                    Warn,
                    self.proc.subject(cx.several()),
                    "not waiting for connections on {missing} {after} after it started: it listens on {address} itself, not on {missing}: it should take its socket from LISTEN_FDS (see --ready)"
                ),
                None => log!(
                    cx,
                    Warn,
                    self.proc.subject(cx.several()),
                    "not waiting for connections on {missing} {after} after it started: does the command take its socket from LISTEN_FDS instead of binding the port itself? (see --ready)"
                ),
            }
        }
        Booted::Still(self)
    }

    /// READY=1 from its own processes.
    pub fn notified_ready(self, cx: &mut Cx) -> Booted {
        if cx.s.takes_notify() {
            Booted::Ready(self.ready(cx, "READY=1"))
        } else {
            log!(
                cx,
                Debug,
                self.proc.subject(cx.several()),
                "READY=1 ignored: --ready is not notify or auto"
            );
            Booted::Still(self)
        }
    }

    fn ready(self, cx: &mut Cx, how: &'static str) -> Up {
        log!(
            cx,
            Info,
            self.proc.subject(cx.several()),
            "ready after {} ({how})",
            super::format_duration(cx.now.saturating_duration_since(self.proc.started))
        );
        Up {
            proc: self.proc,
            since: cx.now,
            by: how,
            watches: Watches::new(cx, self.proc.started, self.lifetime),
        }
    }

    /// The line that says why it is stopped at its readiness deadline.
    pub fn not_ready_line(&self, cx: &mut Cx) {
        let waited = super::format_duration(cx.s.policy.ready_timeout);
        let how = match cx.s.policy.ready {
            Ready::Notify => "it must send READY=1 to $NOTIFY_SOCKET",
            Ready::Accepting => "it must wait for connections on the sockets passed as LISTEN_FDS",
            Ready::Auto => {
                "it must send READY=1 to $NOTIFY_SOCKET or wait for connections on the sockets passed as LISTEN_FDS"
            }
            Ready::After(_) => "it must keep running for the --ready duration",
        };
        let (blind, itself) = match self.readiness {
            Readiness::Probing(p) => (p.blind, p.itself),
            _ => (None, None),
        };
        let subject = self.proc.subject(cx.several());
        let expected = cx.s.stream_names.join(", ");
        let waits_on = matches!(cx.s.policy.ready, Ready::Accepting | Ready::Auto);
        if let Some(address) = itself.filter(|_| waits_on) {
            log!(
                cx,
                Error,
                subject,
                "not ready after {waited}; stopping it ({how}; it listens on {address} itself, not on {expected})"
            );
            return;
        }
        let how = if waits_on && !expected.is_empty() {
            format!("{how}: {expected}")
        } else {
            how.to_string()
        };
        if let Some(cause) = blind {
            log!(
                cx,
                Error,
                subject,
                "not ready after {waited}; stopping it ({how}; its processes could not be looked at ({cause}), so waiting for connections could not be seen: use --ready notify or a --ready duration)"
            );
        } else {
            log!(
                cx,
                Error,
                subject,
                "not ready after {waited}; stopping it ({how}; see --ready)"
            );
        }
    }
}

/// A ready worker, serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Up {
    pub proc: Proc,
    /// Since when it is ready.
    pub since: Instant,
    /// How it became ready ("READY=1", "accepting", ...), for `ctl status`.
    pub by: &'static str,
    /// Its health, watchdog, memory and lifetime (`triggers.rs`).
    pub watches: Watches,
}

/// A replacement on its way: asked for, or booting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    Launching(Launch),
    Booting(Boot),
}

impl Incoming {
    pub fn id(&self) -> WorkerId {
        match self {
            Incoming::Launching(l) => l.id,
            Incoming::Booting(b) => b.proc.id,
        }
    }

    pub fn generation(&self) -> GenId {
        match self {
            Incoming::Launching(l) => l.generation,
            Incoming::Booting(b) => b.proc.generation,
        }
    }

    pub fn member(&self) -> Option<u32> {
        match self {
            Incoming::Launching(l) => l.member,
            Incoming::Booting(b) => b.proc.member,
        }
    }

    pub fn proc(&self) -> Option<&Proc> {
        match self {
            Incoming::Launching(_) => None,
            Incoming::Booting(b) => Some(&b.proc),
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Incoming::Launching(_) => None,
            Incoming::Booting(b) => Some(b.deadline()),
        }
    }
}
