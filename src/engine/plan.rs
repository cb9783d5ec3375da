//! Turning a due rule into the legs to end: pure functions over the
//! snapshot of tracked calls, so the safety checks are testable alone.

use std::collections::HashMap;

use crate::call::{Call, CallUuid};
use crate::policy::{is_protected, HangupScope};

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

/// Plans the hangup of `call` with `scope`. `calls` is the snapshot of
/// tracked calls (B-legs name their A-leg in `parent_call_uuid`).
pub fn plan_hangup(
    call: &Call,
    scope: HangupScope,
    calls: &HashMap<CallUuid, &Call>,
    protected: &[String],
) -> Plan {
    let targets: Vec<CallUuid> = match scope {
        HangupScope::Call => vec![call.uuid.clone()],
        HangupScope::Whole => vec![call
            .parent_call_uuid
            .clone()
            .unwrap_or_else(|| call.uuid.clone())],
        HangupScope::BLegs => children(&call.uuid, calls),
    };
    if targets.is_empty() {
        return Plan::NoLegs;
    }
    // Ending an A-leg ends its B-legs too: check every leg that goes.
    for target in &targets {
        let mut ending = vec![target.clone()];
        ending.extend(children(target, calls));
        for leg in ending {
            let details = if leg == call.uuid {
                call
            } else {
                match calls.get(&leg) {
                    Some(details) => *details,
                    None => return Plan::UnknownLeg(leg),
                }
            };
            for number in [&details.to, &details.from] {
                if is_protected(number, protected) {
                    return Plan::Protected {
                        leg,
                        number: number.clone(),
                    };
                }
            }
        }
    }
    Plan::End(targets)
}

/// The live legs whose parent is `parent`, sorted for a stable order.
pub fn children(parent: &CallUuid, calls: &HashMap<CallUuid, &Call>) -> Vec<CallUuid> {
    let mut legs: Vec<CallUuid> = calls
        .values()
        .filter(|c| c.parent_call_uuid.as_ref() == Some(parent))
        .map(|c| c.uuid.clone())
        .collect();
    legs.sort();
    legs
}
