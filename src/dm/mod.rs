//! Talking to DM itself: its HTTP API, what "healthy" means, and a safe rolling order.

pub mod client;
pub mod health;
pub mod order;
pub mod tasks;
pub mod tls;
pub mod version;
