//! Redis backends for mpush-rs (placeholder, being written).
