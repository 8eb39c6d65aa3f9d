//! Dependency apps (issue 19): recipes a recipe needs next to it, listed in the trusted
//! `ccci.yml` `deps:`. Each is a run app of its own — its domain derived from the run's
//! ([`crate::names::dep_domain`]), its own app lock, the same readiness rules — deployed from its
//! catalogue release before the app under test and torn down after it. This module holds what
//! needs no swarm: the `{{deps.<name>.<key>}}` templates, the provision hook's output and the
//! deps file the tests read; the pipeline deploys, the janitor reaps.

pub mod file;
pub mod provision;
pub mod template;

pub use file::DepsFile;
pub use provision::{ProvisionError, Provisioned};
pub use template::{Entries, TemplateError};
