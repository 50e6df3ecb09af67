//! The generate half: what a build server runs. [`generate`](pipeline::generate)
//! indexes the old image ([`index`]), plans each unit of the new one
//! ([`plan`]), merges units into segments ([`arrange`]), finds repeated new
//! content ([`reuse`]), finds gzip and zlib files and their old versions
//! ([`content`], [`deflate`]), encodes each segment ([`encode`], against a
//! window laid out by [`window`]) and accounts for the bytes ([`report`]).
//! A [`Runner`](runner::Runner) decides how the independent work runs.
//!
//! It uses the shared bottom, and the apply half to prove that what it
//! makes rebuilds (the deflate rebuilders).

pub(crate) mod arrange;
pub(crate) mod content;
pub(crate) mod deflate;
pub(crate) mod encode;
pub(crate) mod exec;
pub(crate) mod fine;
pub(crate) mod index;
pub(crate) mod pipeline;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod reuse;
pub(crate) mod rolling;
pub(crate) mod runner;
pub(crate) mod window;
