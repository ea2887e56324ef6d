//! JSON Schemas of the messages on the wire (events and commands) and the rules for changing them.

pub mod compat;
pub mod text;
pub mod wire;
