//! The HTTP client.
/// Client.
#[derive(Debug)]
pub struct Client;
/// Config.
#[derive(Debug)]
pub struct ClientConfig;
