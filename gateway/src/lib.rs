//! The Aether gateway (being assembled; see `issues show 3`).

pub mod provider;
