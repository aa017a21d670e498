//! A value from the file with the line it was written on.
//!
//! Its own file, below both the pure parse (`file.rs`) and the sections
//! that make these values, so neither has to import the other.

/// A value from the file with the line it was written on, so the load
/// step can say where a file it failed to read was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value as written.
    pub value: T,
    /// Its 1-based line.
    pub line: usize,
}
