//! Identity scrub: the catalogue of what makes a machine unique, compiled
//! into a plan for one root.
//!
//! Part of the select stage, beside the policy. The catalogue
//! ([`catalogue`], in the form of [`spec`]) is compiled ([`rule`]) into a
//! [`Plan`] for one root ([`plan`], with the root's [`traits`], computed
//! [`sources`] and [`hostnames`], and the first-boot guarantees: [`ssh`]
//! host keys and the [`firstboot`] jobs). The policy asks [`Plan::hits`]
//! per entry; the tar writer — or `goldcap scrub` in place — calls
//! [`decide()`] with the file's content when an action needs it.
//!
//! goldcap scrubs in the stream: the source is never touched, and deleted
//! data never enters the artifact. This module must never do I/O beyond
//! reading the root's small configuration files while planning.

pub mod catalogue;
pub mod decide;
pub mod firstboot;
pub mod hostnames;
pub mod plan;
pub mod rule;
pub mod sources;
pub mod spec;
pub mod ssh;
pub mod traits;

pub use catalogue::Catalogue;
pub use decide::{Outcome, decide, needs_content};
pub use plan::{OffOp, Plan, PlanOptions, PlannedOp};
pub use rule::{Action, MachineIdMode};
pub use spec::{ActionKind, RuleSpec};
pub use traits::RootTraits;

#[cfg(test)]
mod tests;
