//! Reading the files the control plane watches, with a bound on their size: a mistaken path
//! (a device, a huge log) must not make it read without end.

use std::{io::Read, path::Path};

/// Why a watched file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    /// Larger than the bound, in bytes.
    TooLarge(u64),
}

/// The whole of `path`, if it holds at most `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .map_err(ReadError::Io)?
        .take(max + 1)
        .read_to_end(&mut raw)
        .map_err(ReadError::Io)?;
    if raw.len() as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    Ok(raw)
}
