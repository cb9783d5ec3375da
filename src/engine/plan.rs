//! Turning a due rule into the legs to end: pure functions over a view of
//! the tracked calls, so the safety checks are testable alone.

use crate::call::{Call, CallUuid};
use crate::policy::{is_protected, HangupScope};

/// What planning needs to know about the other live calls.
pub trait Legs {
    /// The details of a tracked call.
    fn call(&self, uuid: &CallUuid) -> Option<&Call>;
    /// The live legs whose parent is `parent`, in a stable order.
    fn children(&self, parent: &CallUuid) -> Vec<CallUuid>;
}

/// The legs one hangup ends, or why it must not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// DELETE these UUIDs, in order.
    End(Vec<CallUuid>),
    /// A leg that would end has a protected number.
    Protected {
        /// The leg.
        leg: CallUuid,
        /// The protected number on it.
        number: String,
    },
    /// `b-legs` on a call that has none: nothing to end.
    NoLegs,
    /// A leg that would end is not known yet, so its numbers cannot be
    /// checked; try again after the next poll.
    UnknownLeg(CallUuid),
}

/// Plans the hangup of `call` with `scope`.
pub fn plan_hangup(
    call: &Call,
    scope: HangupScope,
    legs: &impl Legs,
    protected: &[String],
) -> Plan {
    let targets: Vec<CallUuid> = match scope {
        HangupScope::Call => vec![call.uuid.clone()],
        HangupScope::Whole => vec![call
            .parent_call_uuid
            .clone()
            .unwrap_or_else(|| call.uuid.clone())],
        HangupScope::BLegs => legs.children(&call.uuid),
    };
    if targets.is_empty() {
        return Plan::NoLegs;
    }
    // Ending an A-leg ends its B-legs too: check every leg that goes.
    for target in &targets {
        let mut ending = vec![target.clone()];
        ending.extend(legs.children(target));
        for leg in ending {
            let details = if leg == call.uuid {
                call
            } else {
                match legs.call(&leg) {
                    Some(details) => details,
                    None => return Plan::UnknownLeg(leg),
                }
            };
            for number in [&details.to, &details.from] {
                if is_protected(number, protected) {
                    return Plan::Protected {
                        leg,
                        number: number.to_string(),
                    };
                }
            }
        }
    }
    Plan::End(targets)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Snapshot(HashMap<CallUuid, Call>);

    impl Legs for Snapshot {
        fn call(&self, uuid: &CallUuid) -> Option<&Call> {
            self.0.get(uuid)
        }
        fn children(&self, parent: &CallUuid) -> Vec<CallUuid> {
            let mut legs: Vec<_> = self
                .0
                .values()
                .filter(|c| c.parent_call_uuid.as_ref() == Some(parent))
                .map(|c| c.uuid.clone())
                .collect();
            legs.sort();
            legs
        }
    }

    fn uuid(s: &str) -> CallUuid {
        CallUuid::parse(s).unwrap()
    }

    fn call(id: &str, to: &str, parent: Option<&str>) -> Call {
        Call {
            to: to.into(),
            parent_call_uuid: parent.map(uuid),
            ..Call::for_test(id)
        }
    }

    fn snapshot(calls: &[Call]) -> Snapshot {
        Snapshot(calls.iter().map(|c| (c.uuid.clone(), c.clone())).collect())
    }

    const PROTECTED: &[&str] = &["911"];

    fn protected() -> Vec<String> {
        PROTECTED.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn whole_ends_the_parent_and_checks_every_leg() {
        let a = call("a", "14155550101", None);
        let b = call("b", "14155550102", Some("a"));
        let legs = snapshot(&[a.clone(), b.clone()]);
        assert_eq!(
            plan_hangup(&b, HangupScope::Whole, &legs, &protected()),
            Plan::End(vec![uuid("a")])
        );
        // A protected B-leg protects the A-leg whose hangup would end it.
        let b911 = call("b", "911", Some("a"));
        let legs = snapshot(&[a.clone(), b911]);
        assert!(matches!(
            plan_hangup(&a, HangupScope::Call, &legs, &protected()),
            Plan::Protected { leg, .. } if leg == uuid("b")
        ));
    }

    #[test]
    fn b_legs_end_only_children_and_unknown_parents_wait() {
        let a = call("a", "14155550101", None);
        let b = call("b", "14155550102", Some("a"));
        let c = call("c", "14155550103", Some("a"));
        let legs = snapshot(&[a.clone(), b.clone(), c]);
        assert_eq!(
            plan_hangup(&a, HangupScope::BLegs, &legs, &protected()),
            Plan::End(vec![uuid("b"), uuid("c")])
        );
        assert_eq!(
            plan_hangup(&b, HangupScope::BLegs, &legs, &protected()),
            Plan::NoLegs
        );
        let orphan = call("d", "14155550104", Some("zz"));
        assert_eq!(
            plan_hangup(&orphan, HangupScope::Whole, &snapshot(&[]), &protected()),
            Plan::UnknownLeg(uuid("zz"))
        );
    }
}
