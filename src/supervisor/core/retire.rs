//! Workers told to stop, until every process of theirs is gone.
//!
//! A retiree got the stop signal (or its main process exited on its own while it held a
//! role); SIGKILL goes to its process group at its deadline; it leaves the list once its main
//! process was reaped and its group is known to be empty, or when graceful-run gives up on
//! processes that do not die of SIGKILL.
//!
//! # Draining before the stop signal
//!
//! With steering, a replaced worker is first steered away from: new connections go to its
//! replacement, while it keeps running unsignalled and accepts what is already queued on its
//! own listener (its member of the steering groups). Its stop signal waits until a look finds
//! it quiet ([`Activity::quiet`]: its queue empty, no handshake toward it still in flight, no
//! busy connection among its processes'), or until `--drain-timeout`. That is what makes a
//! restart lossless for servers that accept after their stop signal and then close what they
//! accepted, or that exit on TERM with requests in flight: by the time they get it, nothing
//! reaches them and nothing they hold is busy. The kernel has no event for "this connection
//! went idle", so the looks come every [`OBSERVE_FIRST`], twice as far apart each time up to
//! [`OBSERVE_MAX`], and only while a worker drains. Connections whose client keeps sending
//! requests (keep-alive streams, [`Activity::streams`]) never go idle by themselves: seen
//! between a response and the next request they do not hold the drain, since only the
//! server can end them and waiting would only run `--drain-timeout` out. Retirees exist in every state of the service (an old
//! generation still finishing its requests while a crash restart backs off, say) and nothing
//! about them depends on which, so the states that can have them own a [`Retirees`] each.
//!
//! # Pids that could be reused
//!
//! A main process is signalled by pid only until the core sees it reaped: until then the pid
//! is graceful-run's unreaped child and cannot name anyone else. A group is signalled after
//! its leader was reaped only while the last check said it is not empty (a group id is not
//! reused while any member lives), never while a check is out (the answer could be "empty",
//! and the group id free for reuse by then), and never after a check said it is empty: the
//! retiree is gone then. Without a subreaper (`--no-subreaper`, not PID 1) members that die
//! are reaped by another init without a word to graceful-run, so the group is dropped right
//! after its SIGKILL instead of being watched.

use std::time::Instant;

use super::Cx;
use super::protocol::*;
use super::worker::{Look, Proc};
use crate::exit::ChildExit;
use crate::signal::{Mapping, Signal};

/// How long processes sent SIGKILL may take to be reaped before graceful-run gives up on them
/// (a process in uninterruptible sleep dies only when its I/O ends).
pub const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// The first look at a draining worker, and the longest gap between looks.
pub const OBSERVE_FIRST: std::time::Duration = std::time::Duration::from_millis(2);
pub const OBSERVE_MAX: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Retiree {
    pub proc: Proc,
    /// Since when it is told to stop.
    pub since: Instant,
    pub stage: Retire,
    /// It held its slot's role when the service ended: its exit is the slot's outcome.
    pub outcome: bool,
    /// What is known of its process group.
    pub group: Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retire {
    /// Steered away and not signalled yet: `mapping` once a look finds it quiet, or at
    /// `until`; then SIGKILL a stop timeout later, and never after `kill_by` (the stop budget).
    Draining {
        until: Instant,
        look: Look,
        interval: std::time::Duration,
        mapping: Mapping,
        kill_by: Option<Instant>,
        /// What the last look found.
        last: Option<Activity>,
    },
    /// Sent the stop signal (or its leader exited and its group gets it); SIGKILL to the group
    /// at `kill_at`. `group_told`: the whole group got the stop signal, not only the leader.
    Stopping { kill_at: Instant, group_told: bool },
    /// Sent SIGKILL; given up on at `give_up_at` if its processes are still not reaped.
    Killed { give_up_at: Instant },
}

/// A retiree's process group, as far as graceful-run may signal it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Group {
    /// Its main process is not reaped: the group exists and its id is ours.
    Led,
    /// Its main process was reaped; whether processes are left is being asked.
    Asked(Ticket),
    /// Its main process was reaped and processes were left at the last check.
    Left,
}

impl Retiree {
    /// What it is doing, for `ctl status`: draining (with what the last look found), or
    /// stopping.
    pub fn role(&self) -> (Role, Option<Activity>) {
        match self.stage {
            Retire::Draining { last, .. } => (Role::Retiring, last),
            _ => (Role::Stopping, None),
        }
    }

    /// Whether its process group may be signalled now.
    fn group_signallable(&self, cx: &Cx) -> bool {
        cx.s.own_group() && matches!(self.group, Group::Led | Group::Left)
    }

    /// Sends a forwarded or stop signal the way they go (see "Who gets signals" in the
    /// module docs of `core`).
    fn signal(&self, cx: &mut Cx, signal: Signal) -> bool {
        match (cx.s.delivery, self.proc.exited) {
            (Delivery::NoGroup, Some(_)) => false,
            (Delivery::Group, _) | (Delivery::Mixed, Some(_)) => {
                if self.group_signallable(cx) {
                    cx.send(
                        Target::Group {
                            worker: self.proc.id,
                            pgid: self.proc.pid,
                        },
                        signal,
                    );
                    true
                } else {
                    false
                }
            }
            (_, None) => {
                cx.send(
                    Target::Leader {
                        worker: self.proc.id,
                        pid: self.proc.pid,
                    },
                    signal,
                );
                true
            }
        }
    }

    /// SIGKILL to everything of it that may be signalled.
    fn kill(&self, cx: &mut Cx) {
        if cx.s.own_group() {
            if self.group_signallable(cx) {
                cx.send(
                    Target::Group {
                        worker: self.proc.id,
                        pgid: self.proc.pid,
                    },
                    Signal::KILL,
                );
            }
        } else if self.proc.exited.is_none() {
            cx.send(
                Target::Leader {
                    worker: self.proc.id,
                    pid: self.proc.pid,
                },
                Signal::KILL,
            );
        }
    }

    fn deadline(&self) -> Instant {
        match self.stage {
            Retire::Draining {
                until,
                look: Look::At(at),
                ..
            } => until.min(at),
            Retire::Draining { until, .. } => until,
            Retire::Stopping { kill_at, .. } => kill_at,
            Retire::Killed { give_up_at } => give_up_at,
        }
    }

    /// The stop signal (`mapping`), then SIGCONT (a stopped process acts on the stop signal
    /// only once continued), and the line that says so and when SIGKILL comes.
    fn send_stop(&self, cx: &mut Cx, mapping: Mapping, kill_at: Instant) {
        let subject = self.proc.subject(cx.several());
        let wait = super::format_duration(kill_at.saturating_duration_since(cx.now));
        match mapping {
            Mapping::To(signal) => {
                self.signal(cx, signal);
                if signal != Signal::KILL && signal != Signal::CONT {
                    self.signal(cx, Signal::CONT);
                }
                log!(
                    cx,
                    Info,
                    subject,
                    "sent {signal}; SIGKILL in {wait} if still running"
                );
            }
            Mapping::Drop => log!(
                cx,
                Info,
                subject,
                "the stop signal is dropped by --map-signal; SIGKILL in {wait}"
            ),
        }
    }

    /// Out of the drain: its stop signal now, SIGKILL a stop timeout later.
    fn stop_after_drain(&mut self, cx: &mut Cx) {
        let Retire::Draining {
            mapping, kill_by, ..
        } = self.stage
        else {
            return;
        };
        let mut kill_at = super::later(cx.now, cx.s.policy.stop_timeout);
        if let Some(end) = kill_by {
            kill_at = kill_at.min(end.max(cx.now));
        }
        self.send_stop(cx, mapping, kill_at);
        self.stage = Retire::Stopping {
            kill_at,
            group_told: cx.s.delivery == Delivery::Group,
        };
    }
}

/// What a quiet look found, for the line that ends a drain: its idle connections, and the
/// keep-alive streams it ended on (see [`Activity::streams`]).
pub(super) fn connections(activity: &Activity) -> String {
    let plural = |n: u32| if n == 1 { "" } else { "s" };
    let idle = format!("{} idle connection{}", activity.idle, plural(activity.idle));
    if activity.streams == 0 {
        return idle;
    }
    format!(
        "ended on {} keep-alive stream{} at a request boundary, {idle}: their clients keep \
         sending requests, which only the server can end",
        activity.streams,
        plural(activity.streams)
    )
}

/// Every retiree of the service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Retirees(Vec<Retiree>);

impl Retirees {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a group check is out.
    pub fn checking(&self) -> bool {
        self.0.iter().any(|r| matches!(r.group, Group::Asked(_)))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Retiree> {
        self.0.iter()
    }

    /// Whether `pid` is one of their main processes, or `pgid` one of their groups.
    pub fn knows(&self, pid: i32, pgid: Option<i32>, own_group: bool) -> bool {
        self.0
            .iter()
            .any(|r| r.proc.pid == pid || (own_group && pgid == Some(r.proc.pid)))
    }

    /// Tells a worker to stop: `mapping` (the stop signal) now, SIGKILL to its group at
    /// `kill_at`, or at once when that is now (a forced stop, a spent budget). `outcome`: its
    /// exit is its slot's outcome.
    pub fn retire(
        &mut self,
        cx: &mut Cx,
        proc: Proc,
        mapping: Mapping,
        kill_at: Instant,
        outcome: bool,
    ) {
        let mut retiree = Retiree {
            proc,
            since: cx.now,
            stage: Retire::Stopping {
                kill_at,
                group_told: cx.s.delivery == Delivery::Group,
            },
            outcome,
            group: Group::Led,
        };
        let subject = proc.subject(cx.several());
        if kill_at <= cx.now {
            log!(
                cx,
                Warn,
                subject,
                "the stop budget is spent: sending SIGKILL to its process group"
            );
            retiree.kill(cx);
            retiree.stage = Retire::Killed {
                give_up_at: cx.now + KILL_GRACE,
            };
            self.0.push(retiree);
            return;
        }
        retiree.send_stop(cx, mapping, kill_at);
        self.0.push(retiree);
    }

    /// Steers-away a replaced worker: it drains, unsignalled, until a look finds it quiet or
    /// until `until`; then it gets `mapping`.
    pub fn drain(&mut self, cx: &mut Cx, proc: Proc, mapping: Mapping, until: Instant) {
        log!(
            cx,
            Info,
            proc.subject(cx.several()),
            "new connections go to its replacement; draining (at most {}) before its stop signal",
            super::format_duration(until.saturating_duration_since(cx.now))
        );
        self.0.push(Retiree {
            proc,
            since: cx.now,
            stage: Retire::Draining {
                until,
                look: Look::At(cx.now + OBSERVE_FIRST),
                interval: OBSERVE_FIRST,
                mapping,
                kill_by: None,
                last: None,
            },
            outcome: false,
            group: Group::Led,
        });
    }

    /// The answer to a look at a draining worker, if it is one of theirs.
    pub fn observed(&mut self, cx: &mut Cx, ticket: Ticket, activity: Activity) -> bool {
        let Some(r) = self.0.iter_mut().find(
            |r| matches!(r.stage, Retire::Draining { look: Look::Asked(t), .. } if t == ticket),
        ) else {
            return false;
        };
        let since = r.since;
        let subject = r.proc.subject(cx.several());
        if activity.quiet() {
            log!(
                cx,
                Info,
                subject,
                "drained after {} ({}{})",
                super::format_duration(cx.now.saturating_duration_since(since)),
                connections(&activity),
                if activity.blind {
                    "; its connections could not be looked at, only its queue"
                } else {
                    ""
                }
            );
            r.stop_after_drain(cx);
            return true;
        }
        if let Retire::Draining {
            look,
            interval,
            last,
            ..
        } = &mut r.stage
        {
            *interval = (*interval * 2).min(OBSERVE_MAX);
            *look = Look::At(cx.now + *interval);
            *last = Some(activity);
        }
        true
    }

    /// A worker that already received its stop signal (from the terminal): only its
    /// deadline is armed.
    pub fn already_told(&mut self, cx: &mut Cx, proc: Proc, kill_at: Instant) {
        log!(
            cx,
            Info,
            proc.subject(cx.several()),
            "already received the stop signal from the terminal"
        );
        self.0.push(Retiree {
            proc,
            since: cx.now,
            stage: Retire::Stopping {
                kill_at,
                group_told: false,
            },
            outcome: true,
            group: Group::Led,
        });
    }

    /// A worker killed at once (hung, by the watchdog): SIGKILL to its group now. `outcome`:
    /// nothing took its slot's role, so its end is the slot's.
    pub fn kill(&mut self, cx: &mut Cx, proc: Proc, outcome: bool) {
        let retiree = Retiree {
            proc,
            since: cx.now,
            stage: Retire::Killed {
                give_up_at: cx.now + KILL_GRACE,
            },
            outcome,
            group: Group::Led,
        };
        log!(
            cx,
            Warn,
            proc.subject(cx.several()),
            "sending SIGKILL to its process group"
        );
        retiree.kill(cx);
        self.0.push(retiree);
    }

    /// A worker that is to get SIGKILL with the others (a forced stop): nothing is sent here.
    pub fn told(&mut self, cx: &mut Cx, proc: Proc, kill_at: Instant, outcome: bool) {
        self.0.push(Retiree {
            proc,
            since: cx.now,
            stage: Retire::Stopping {
                kill_at,
                group_told: true,
            },
            outcome,
            group: Group::Led,
        });
    }

    /// A worker whose main process exited while it held a role: processes may be left in
    /// its group (a pre-fork master's workers); they are stopped like any retiree's, once a
    /// check says they exist.
    pub fn leader_gone(&mut self, cx: &mut Cx, proc: Proc, kill_at: Instant) {
        if !cx.s.own_group() {
            cx.push(Action::Release { worker: proc.id });
            return;
        }
        let ticket = cx.ask(Question::CheckGroup {
            worker: proc.id,
            pgid: proc.pid,
        });
        self.0.push(Retiree {
            proc,
            since: cx.now,
            stage: Retire::Stopping {
                kill_at,
                group_told: false,
            },
            outcome: false,
            group: Group::Asked(ticket),
        });
    }

    /// A reaped main process, if it is a retiree's: its worker, and whether its exit is its
    /// slot's outcome.
    pub fn exited(&mut self, cx: &mut Cx, pid: i32, exit: ChildExit) -> Option<(Proc, bool)> {
        let index = self
            .0
            .iter()
            .position(|r| r.proc.pid == pid && r.proc.exited.is_none())?;
        let r = &mut self.0[index];
        r.proc.exited = Some(exit);
        if let Retire::Draining { kill_by, .. } = r.stage {
            // It ended its drain itself: what is left of it stops as any retiree's.
            let mut kill_at = super::later(cx.now, cx.s.policy.stop_timeout);
            if let Some(end) = kill_by {
                kill_at = kill_at.min(end.max(cx.now));
            }
            r.stage = Retire::Stopping {
                kill_at,
                group_told: false,
            };
        }
        let (proc, outcome) = (r.proc, r.outcome);
        log!(cx, Info, proc.subject(cx.several()), "{exit}");
        if cx.s.own_group() {
            r.group = Group::Asked(cx.ask(Question::CheckGroup {
                worker: proc.id,
                pgid: proc.pid,
            }));
        } else {
            self.drop_at(cx, index);
        }
        Some((proc, outcome))
    }

    /// After any reap: a group whose leader is gone may have emptied.
    pub fn recheck(&mut self, cx: &mut Cx) {
        for r in &mut self.0 {
            if r.group == Group::Left {
                r.group = Group::Asked(cx.ask(Question::CheckGroup {
                    worker: r.proc.id,
                    pgid: r.proc.pid,
                }));
            }
        }
    }

    /// The answer to a group check, if it is one of theirs. Processes left behind by a main
    /// process that exited get the stop signal `mapping` (they may never have had it: signals
    /// went to the main process), or SIGKILL when the deadline already passed.
    pub fn group_checked(
        &mut self,
        cx: &mut Cx,
        ticket: Ticket,
        alive: bool,
        mapping: Mapping,
    ) -> bool {
        let Some(index) = self.0.iter().position(|r| r.group == Group::Asked(ticket)) else {
            return false;
        };
        if !alive {
            log!(
                cx,
                Debug,
                self.0[index].proc.subject(cx.several()),
                "all processes of this worker are gone"
            );
            self.drop_at(cx, index);
            return true;
        }
        let r = &mut self.0[index];
        r.group = Group::Left;
        let r = *r;
        let subject = r.proc.subject(cx.several());
        match r.stage {
            Retire::Stopping {
                kill_at,
                group_told: false,
            } => {
                self.0[index].stage = Retire::Stopping {
                    kill_at,
                    group_told: true,
                };
                log!(
                    cx,
                    Info,
                    subject,
                    "processes are left in its process group; stopping them"
                );
                if let Mapping::To(signal) = mapping {
                    let wait = super::format_duration(kill_at.saturating_duration_since(cx.now));
                    log!(
                        cx,
                        Info,
                        subject,
                        "sent {signal} to its process group; SIGKILL in {wait} if still running"
                    );
                    r.signal(cx, signal);
                    if signal != Signal::KILL && signal != Signal::CONT {
                        r.signal(cx, Signal::CONT);
                    }
                }
            }
            Retire::Stopping { .. } | Retire::Draining { .. } => {}
            Retire::Killed { .. } => {
                // Its SIGKILL may have come while the check was out, when the group could not
                // be signalled.
                r.kill(cx);
                if !cx.s.reaper {
                    // Without a subreaper the group's orphans belong to another init, which
                    // reaps them without telling graceful-run: after SIGKILL they are that
                    // init's business.
                    self.drop_at(cx, index);
                }
            }
        }
        true
    }

    fn drop_at(&mut self, cx: &mut Cx, index: usize) {
        let r = self.0.remove(index);
        cx.push(Action::Release { worker: r.proc.id });
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.0.iter().map(Retiree::deadline).min()
    }

    /// SIGKILL for those whose stop timeout passed; giving up on those that SIGKILL did not
    /// end in time.
    pub fn expire(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let mut index = 0;
        while index < self.0.len() {
            let r = self.0[index];
            if r.deadline() > now {
                index += 1;
                continue;
            }
            let subject = r.proc.subject(cx.several());
            match r.stage {
                Retire::Draining { until, last, .. } if until <= now => {
                    let still = match last {
                        Some(a) => format!(
                            " ({} queued, {} busy connection{})",
                            a.queued + a.in_flight,
                            a.busy,
                            if a.busy == 1 { "" } else { "s" }
                        ),
                        None => String::new(),
                    };
                    log!(
                        cx,
                        Warn,
                        subject,
                        "still busy after --drain-timeout{still}: sending the stop signal"
                    );
                    self.0[index].stop_after_drain(cx);
                    index += 1;
                }
                Retire::Draining { .. } => {
                    if let Retire::Draining { look, .. } = &mut self.0[index].stage {
                        *look = Look::Asked(cx.ask(Question::Observe {
                            worker: r.proc.id,
                            pgid: r.proc.pid,
                            member: r.proc.member,
                        }));
                    }
                    index += 1;
                }
                Retire::Stopping { .. } => {
                    log!(
                        cx,
                        Warn,
                        subject,
                        "did not stop in time: sending SIGKILL to its process group"
                    );
                    r.kill(cx);
                    self.0[index].stage = Retire::Killed {
                        give_up_at: now + KILL_GRACE,
                    };
                    if !cx.s.reaper && r.proc.exited.is_some() && r.group == Group::Left {
                        self.drop_at(cx, index);
                        continue;
                    }
                    index += 1;
                }
                Retire::Killed { .. } => {
                    log!(
                        cx,
                        Warn,
                        subject,
                        "still not reaped {} after SIGKILL; giving up on it",
                        super::format_duration(KILL_GRACE)
                    );
                    self.drop_at(cx, index);
                }
            }
        }
    }

    /// A forced stop: SIGKILL to every one still being waited for, at once.
    pub fn force(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let mut index = 0;
        while index < self.0.len() {
            let r = self.0[index];
            if let Retire::Stopping { .. } | Retire::Draining { .. } = r.stage {
                log!(
                    cx,
                    Warn,
                    r.proc.subject(cx.several()),
                    "forced stop: sending SIGKILL to its process group"
                );
                r.kill(cx);
                self.0[index].stage = Retire::Killed {
                    give_up_at: now + KILL_GRACE,
                };
                if !cx.s.reaper && r.proc.exited.is_some() && r.group == Group::Left {
                    self.drop_at(cx, index);
                    continue;
                }
            }
            index += 1;
        }
    }

    /// Every one must be gone by `end` (the stop budget), and get its stop signal by
    /// `signal_by`.
    pub fn cap(&mut self, end: Instant, signal_by: Instant) {
        for r in &mut self.0 {
            match &mut r.stage {
                Retire::Stopping { kill_at, .. } => *kill_at = (*kill_at).min(end),
                Retire::Draining { until, kill_by, .. } => {
                    *until = (*until).min(signal_by);
                    *kill_by = Some(end);
                }
                Retire::Killed { .. } => {}
            }
        }
    }

    /// The members their processes may still hold.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter_map(|r| r.proc.member)
    }

    /// Sends a forwarded signal to every one whose processes may still get it; whether any did.
    pub fn forward(&self, cx: &mut Cx, signal: Signal, to: Signal) -> bool {
        let mut any = false;
        for r in &self.0 {
            if r.proc.exited.is_some() && cx.s.delivery != Delivery::Group {
                continue;
            }
            log!(
                cx,
                Debug,
                r.proc.subject(cx.several()),
                "forwarding {signal} as {to}"
            );
            any |= r.signal(cx, to);
        }
        any
    }
}
