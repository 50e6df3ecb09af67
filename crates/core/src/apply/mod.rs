//! The apply half: what a device runs. A [`Patcher`](patch::Patcher)
//! applies one segment from a [`Source`](source::Source) (the old image,
//! read by position) into a [`Sink`](sink::Sink); deflate segments are
//! re-deflated by a [`Redeflate`](rebuild::Redeflate).
//!
//! It uses the crate's shared bottom (`error`, `frame`, `lzma`, `segment`)
//! and nothing of the generate half.

pub(crate) mod patch;
pub(crate) mod rebuild;
pub(crate) mod sink;
pub(crate) mod source;
