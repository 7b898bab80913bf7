//! Root package of the mpush-rs workspace: launcher, benchmark and integration tests.
