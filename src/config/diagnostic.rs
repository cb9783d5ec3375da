//! Diagnostics.
/// Severity.
#[derive(Debug, Clone, Copy)]
pub enum Severity {}
/// A diagnostic.
#[derive(Debug, Clone)]
pub struct Diagnostic;
/// Many.
pub type Diagnostics = Vec<Diagnostic>;
