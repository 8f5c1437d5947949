//! The local provider (being built).
