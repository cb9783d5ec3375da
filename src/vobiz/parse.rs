//! Parsers.
/// Cdr.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdr;
/// p
pub fn parse_call_list() {}
/// p
pub fn parse_call_detail() {}
/// p
pub fn parse_cdr() {}
