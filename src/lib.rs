//! Root package of the mpush-rs workspace: the launcher and benchmark examples and the
//! cross-crate end-to-end tests. The README below is compiled as a doctest.
#![doc = include_str!("../README.md")]
