//! Calls the tests place in the simulator, and what became of them.

use callwarden::sim::SimHandle;
use serde_json::{json, Value};

/// An outbound call `age_s` seconds old from a fixed US number to `to`.
pub fn outbound(age_s: f64, to: &str) -> Value {
    json!({"age_s": age_s, "direction": "outbound", "from": "+14155550100", "to": to})
}

/// Whether the simulator has ended `uuid` (hung up, or ended on its own).
pub fn ended(sim: &SimHandle, uuid: &str) -> bool {
    sim.state().call(uuid).is_some_and(|c| c.ended_at.is_some())
}
