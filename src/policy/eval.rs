//! Evaluation of rules against a call.

/// What callwarden knows of a call's times.
#[derive(Debug, Clone)]
pub struct Timeline;
/// The result of evaluating every rule.
#[derive(Debug, Clone)]
pub struct Evaluation;
/// One rule's verdict.
#[derive(Debug, Clone)]
pub struct RuleVerdict;
/// Why a rule matched or not.
#[derive(Debug, Clone)]
pub enum RuleOutcome {}
/// Evaluates the rules.
pub fn evaluate() {}
