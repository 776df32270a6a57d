//! Load balancing for the Weft proxy (being written).
#![forbid(unsafe_code)]
