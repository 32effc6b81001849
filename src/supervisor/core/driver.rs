//! The one dispatch loop between the core and a world: the executor's real processes, or the
//! property test's simulated ones. Sharing it means the test runs the very order in which the
//! executor feeds events and answers, not an imitation of it.
//!
//! One event goes in; each action that comes out is carried out in order; a question's answer
//! (with any event the world must report before it, such as reaps found while looking for
//! leftovers) is queued, and every queued answer is fed in order before the dispatch returns,
//! that is, before any other event.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Action, Core, Event};
use crate::exit::Outcome;

/// What the core's actions act on.
pub trait World {
    /// The time of the next step.
    fn now(&mut self) -> Instant;

    /// Carries out one action (never [`Action::Exit`], which the loop keeps). A question's
    /// answer goes into `answers`, after any event it must come behind.
    fn perform(&mut self, action: Action, answers: &mut Answers);

    /// Sees each event just before the core takes it (the property test records what the
    /// core knows from then on).
    fn feeding(&mut self, _event: &Event) {}

    /// Sees the core after each step (the property test checks its invariants there).
    fn stepped(&mut self, _core: &Core) {}
}

/// Events a world owes the core before anything else happens.
#[derive(Debug, Default)]
pub struct Answers(VecDeque<Event>);

impl Answers {
    pub fn push(&mut self, event: Event) {
        self.0.push_back(event);
    }

    /// The first event owed.
    pub fn pop(&mut self) -> Option<Event> {
        self.0.pop_front()
    }
}

/// Feeds `event` and every answer it leads to; the outcome once the core decided to exit.
///
/// Allocates nothing itself on the way of a signal to its `kill`: the first event is not
/// queued (`answers` allocates only when a question is answered), and the actions are drained
/// from the core's own buffer, which keeps its capacity from step to step. A step is taken in
/// its two halves (`Core::take`, `Core::settle`), so that the event's actions are carried out
/// before the core looks for deadlines due.
pub fn dispatch(core: &mut Core, world: &mut impl World, event: Event) -> Option<Outcome> {
    let mut answers = Answers(VecDeque::new());
    let mut first = Some(event);
    let mut outcome = None;
    while let Some(event) = first.take().or_else(|| answers.0.pop_front()) {
        let now = world.now();
        world.feeding(&event);
        // The event's own actions first (a forwarded signal's kill), then what is due.
        for action in core.take(now, event) {
            match action {
                Action::Exit(exit) => outcome = Some(exit),
                action => world.perform(action, &mut answers),
            }
        }
        for action in core.settle(now) {
            match action {
                Action::Exit(exit) => outcome = Some(exit),
                action => world.perform(action, &mut answers),
            }
        }
        world.stepped(core);
        if outcome.is_some() {
            return outcome;
        }
    }
    outcome
}
