//! The operations, one module each. Every operation validates its input,
//! asks the caller policy, calls the upstream within the caller's deadline
//! and writes one audit line, in that order, before answering.

pub mod arm;
pub mod blob;
pub mod datalake;
pub mod sas;
pub mod secret;
pub mod sql;
pub mod token;
