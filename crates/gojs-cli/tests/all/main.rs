//! gojs's integration tests: one binary, a module per concern. Go fixtures live as source under
//! `fixtures/` and are built by the harness with the `go` on PATH (and Debian's older Go
//! packages for the version tests).

mod bad_input;
mod call;
mod compile;
mod conformance;
mod examples;
mod fixtures;
mod go_versions;
mod grants;
mod harness;
mod library;
mod node;
