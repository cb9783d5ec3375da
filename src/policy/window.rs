//! Rule windows.

/// A compiled `[[rule.window]]`.
#[derive(Debug, Clone)]
pub struct Window;
