//! Loading.
/// Env.
#[derive(Debug, Clone)]
pub struct Environment;
/// Loaded.
#[derive(Debug)]
pub struct Loaded;
/// Load.
pub fn load() {}
