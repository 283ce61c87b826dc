//! Talking to DM itself: its HTTP API, and what a safe rolling order is.

pub mod client;
pub mod order;
