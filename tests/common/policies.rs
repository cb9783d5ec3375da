//! Policy texts that several test files run the daemon or engine with.

/// Calls to +1900... end 5 s after they start.
pub const PREMIUM_5S: &str = r#"
[[rule]]
name = "premium-5s"
max_duration = "5s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
to = ["+1900*"]
"#;

/// Every outbound call ends 10 s after it starts.
pub const START_LIMIT_10S: &str = r#"
[[rule]]
name = "limit-10s"
max_duration = "10s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"#;
