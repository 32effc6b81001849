//! What watches a serving worker for a reason to replace it without a restart request
//! (issue 18): its health (`--health-cmd`, `--health-http`), the watchdog (`--watchdog`), its
//! memory (`--max-memory`) and its lifetime (`--max-lifetime`).
//!
//! A reason found here only asks for a replacement ([`Reason`]); the slot takes the
//! zero-downtime path as a restart does (`running/`): the replacement starts, becomes ready,
//! takes over, and the old worker drains before its stop signal. The last good worker is never
//! replaced with nothing, a replacement already on its way is not started twice, and a
//! replacement that fails leaves the old worker serving (and says so). A worker the watchdog
//! found hung is killed once its replacement is ready, or a stop timeout after it was found,
//! whichever comes first: draining a hung process would wait for nothing.
//!
//! Each watch costs only while its flag is given: a health check every `--health-interval`, a
//! memory sample of every serving worker once a second ([`MEMORY_INTERVAL`]), and one deadline
//! each for the watchdog and the lifetime. An idle graceful-run without these flags never
//! wakes.

use std::time::{Duration, Instant};

use super::Cx;
use super::protocol::*;
use super::worker::Up;
use crate::exit::ChildExit;

/// How often every serving worker's memory is sampled under `--max-memory`.
pub const MEMORY_INTERVAL: Duration = Duration::from_secs(1);
/// Samples in a row over `--max-memory` that make a worker be replaced: a short spike (a
/// garbage collection, a burst of large requests) is not a leak, and replacing on it would
/// replace again and again under the same load.
pub const MEMORY_SAMPLES_OVER: u32 = 3;
/// How long past `--health-timeout` a `--health-http` probe is waited for before it counts as
/// failed anyway (the executor times it out itself; this only guards against a lost answer).
const PROBE_BACKSTOP: Duration = Duration::from_secs(1);

/// The watches of one serving worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Watches {
    pub health: Option<Health>,
    /// No WATCHDOG=1 by then: it is hung.
    pub watchdog_at: Option<Instant>,
    /// It has served its `--max-lifetime` then.
    pub lifetime_at: Option<Instant>,
    /// Samples in a row over `--max-memory`, and the last sample.
    pub over_memory: u32,
    pub memory: Option<u64>,
    /// A replacement was asked for, and why.
    pub replacing: Option<Reason>,
    /// The watchdog found it hung: killed then if its replacement is not ready yet.
    pub kill_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Health {
    pub check: Check,
    /// Failed checks in a row that count.
    pub failures: u32,
    /// The start period is over: a check succeeded, or it ran out.
    pub counting: bool,
    /// How the last check that counted ended (None before any).
    pub healthy: Option<bool>,
}

/// A worker's next or current health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// The next one starts then.
    At(Instant),
    /// Asked the executor to start it.
    Asked(Ticket),
    /// A `--health-cmd` process runs; killed at `deadline`.
    Process { pid: i32, deadline: Instant },
    /// A `--health-cmd` process killed at its timeout, until it is reaped.
    Killed { pid: i32 },
    /// A `--health-http` probe runs.
    Probe { deadline: Instant },
}

impl Watches {
    /// The watches of a worker ready now; `lifetime` was drawn when it started.
    pub fn new(cx: &Cx, started: Instant, lifetime: Option<Duration>) -> Watches {
        let now = cx.now;
        Watches {
            health: cx.s.health.map(|h| Health {
                check: Check::At(super::later(now, h.interval)),
                failures: 0,
                counting: false,
                healthy: None,
            }),
            watchdog_at: cx.s.policy.watchdog.map(|d| super::later(now, d)),
            lifetime_at: lifetime.map(|d| super::later(started, d)),
            over_memory: 0,
            memory: None,
            replacing: None,
            kill_at: None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        let check = self.health.and_then(|h| match h.check {
            Check::At(at) => Some(at),
            Check::Process { deadline, .. } | Check::Probe { deadline } => Some(deadline),
            Check::Asked(_) | Check::Killed { .. } => None,
        });
        [check, self.watchdog_at, self.lifetime_at, self.kill_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// A worker's lifetime under `--max-lifetime`: 90 to 100% of it, drawn from `random`, so that
/// workers started together are not all replaced at once.
pub(super) fn lifetime(cx: &Cx, random: u64) -> Option<Duration> {
    let max = cx.s.max_lifetime?;
    let nanos = max.as_nanos();
    let jitter = (nanos / 10 * u128::from(random)) >> 64;
    Some(Duration::from_nanos(
        u64::try_from(nanos - jitter).unwrap_or(u64::MAX),
    ))
}

impl Up {
    fn watches_mut(&mut self) -> &mut Watches {
        &mut self.watches
    }

    /// Whatever of its watches is due at `cx.now`; the reason to replace it, if one fired.
    pub fn expire_watches(&mut self, cx: &mut Cx) -> Option<Reason> {
        let now = cx.now;
        let subject = self.proc.subject(cx.several());
        let (id, pid, slot, member) = (
            self.proc.id,
            self.proc.pid,
            self.proc.slot,
            self.proc.member,
        );
        let mut reason = None;
        if let Some(health) = &mut self.watches.health {
            match health.check {
                Check::At(at) if at <= now => {
                    health.check = Check::Asked(cx.ask(Question::StartCheck {
                        worker: id,
                        pid,
                        slot,
                        member,
                    }));
                }
                Check::Process { pid, deadline } if deadline <= now => {
                    // Its group: a shell's children go with it.
                    cx.send(Target::Hook { pid }, crate::signal::Signal::KILL);
                    health.check = Check::Killed { pid };
                }
                Check::Probe { deadline } if deadline <= now => {
                    reason = self.health_result(cx, Err("no answer".to_string()));
                }
                _ => {}
            }
        }
        let w = self.watches_mut();
        if let Some(at) = w.watchdog_at
            && at <= now
        {
            w.watchdog_at = None;
            if let Some(watchdog) = cx.s.policy.watchdog {
                log!(
                    cx,
                    Warn,
                    subject,
                    "no WATCHDOG=1 for {}: hung; replacing it",
                    super::format_duration(watchdog)
                );
            }
            w.kill_at = Some(super::later(now, cx.s.policy.stop_timeout));
            reason = reason.or(Some(Reason::Watchdog));
        }
        let w = self.watches_mut();
        if let Some(at) = w.lifetime_at
            && at <= now
        {
            w.lifetime_at = None;
            log!(
                cx,
                Info,
                subject,
                "served its --max-lifetime ({}): replacing it",
                super::format_duration(now.saturating_duration_since(self.proc.started))
            );
            reason = reason.or(Some(Reason::Lifetime));
        }
        reason
    }

    /// The executor's answer to a health check's start.
    pub fn check_started(
        &mut self,
        cx: &mut Cx,
        ticket: Ticket,
        start: CheckStart,
    ) -> Option<Reason> {
        let health = self.watches.health.as_mut()?;
        if health.check != Check::Asked(ticket) {
            return None;
        }
        let timeout = cx.s.health.map_or(Duration::ZERO, |h| h.timeout);
        match start {
            CheckStart::Process(pid) => {
                health.check = Check::Process {
                    pid,
                    deadline: super::later(cx.now, timeout),
                };
                None
            }
            CheckStart::Probe => {
                health.check = Check::Probe {
                    deadline: super::later(super::later(cx.now, timeout), PROBE_BACKSTOP),
                };
                None
            }
            CheckStart::Failed(why) => self.health_result(cx, Err(why)),
        }
    }

    /// Whether `pid` is its `--health-cmd` process.
    pub fn runs_check(&self, pid: i32) -> bool {
        matches!(
            self.watches.health.map(|h| h.check),
            Some(Check::Process { pid: p, .. } | Check::Killed { pid: p }) if p == pid
        )
    }

    /// Its `--health-cmd` process ended.
    pub fn check_exited(&mut self, cx: &mut Cx, exit: ChildExit) -> Option<Reason> {
        let health = self.watches.health?;
        let result = match health.check {
            Check::Killed { .. } => Err(format!(
                "no result within --health-timeout {}",
                super::format_duration(cx.s.health.map_or(Duration::ZERO, |h| h.timeout))
            )),
            _ if exit.success() => Ok(()),
            _ => Err(format!("--health-cmd {exit}")),
        };
        self.health_result(cx, result)
    }

    /// The end of its `--health-http` probe.
    pub fn probe_ended(&mut self, cx: &mut Cx, result: Result<u16, String>) -> Option<Reason> {
        if !matches!(
            self.watches.health.map(|h| h.check),
            Some(Check::Probe { .. })
        ) {
            return None;
        }
        let result = match result {
            Ok(status) if (200..400).contains(&status) => Ok(()),
            Ok(status) => Err(format!("HTTP status {status}")),
            Err(why) => Err(why),
        };
        self.health_result(cx, result)
    }

    /// One check's result: counted (unless the start period is on), and after
    /// `--health-retries` failures in a row, a reason to replace it.
    fn health_result(&mut self, cx: &mut Cx, result: Result<(), String>) -> Option<Reason> {
        let settings = cx.s.health?;
        let subject = self.proc.subject(cx.several());
        let start_period_over = cx.now >= super::later(self.proc.started, settings.start_period);
        let health = self.watches.health.as_mut()?;
        health.check = Check::At(super::later(cx.now, settings.interval));
        match result {
            Ok(()) => {
                health.failures = 0;
                health.counting = true;
                if health.healthy != Some(true) {
                    if health.healthy == Some(false) {
                        log!(cx, Info, subject, "healthy again");
                    }
                    health.healthy = Some(true);
                }
                None
            }
            Err(why) => {
                if !health.counting && !start_period_over {
                    log!(
                        cx,
                        Debug,
                        subject,
                        "health check failed in the start period: {why}"
                    );
                    return None;
                }
                health.counting = true;
                health.failures += 1;
                log!(
                    cx,
                    Warn,
                    subject,
                    "health check failed ({}/{}): {why}",
                    health.failures,
                    settings.retries
                );
                if health.failures < settings.retries {
                    return None;
                }
                health.failures = 0;
                health.healthy = Some(false);
                let checks = match settings.retries {
                    1 => "1 failed check".to_string(),
                    n => format!("{n} failed checks in a row"),
                };
                log!(cx, Warn, subject, "unhealthy after {checks}: replacing it");
                Some(Reason::Unhealthy)
            }
        }
    }

    /// WATCHDOG=1 from its processes.
    pub fn watchdog_ping(&mut self, cx: &Cx) {
        if self.watches.watchdog_at.is_some()
            && let Some(watchdog) = cx.s.policy.watchdog
        {
            self.watches.watchdog_at = Some(super::later(cx.now, watchdog));
        }
    }

    /// A memory sample; after [`MEMORY_SAMPLES_OVER`] in a row over `--max-memory`, a reason
    /// to replace it.
    pub fn memory_sampled(&mut self, cx: &mut Cx, bytes: u64) -> Option<Reason> {
        let max = cx.s.max_memory?;
        let subject = self.proc.subject(cx.several());
        let w = self.watches_mut();
        w.memory = Some(bytes);
        if bytes <= max {
            w.over_memory = 0;
            return None;
        }
        w.over_memory += 1;
        if w.over_memory < MEMORY_SAMPLES_OVER {
            return None;
        }
        w.over_memory = 0;
        log!(
            cx,
            Warn,
            subject,
            "{} over --max-memory {} in {MEMORY_SAMPLES_OVER} samples in a row: replacing it",
            mebibytes(bytes),
            mebibytes(max)
        );
        Some(Reason::Memory)
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
