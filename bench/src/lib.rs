//! Code shared by the benchmark binaries (`token-bench`, `sql-stream`,
//! `attack`); each binary's own file owns its measurements and output.

pub mod support;
