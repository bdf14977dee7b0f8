//! The SQLite value rules every connector applies (DESIGN.md "Values"): one implementation so
//! every source renders the same source value the same way.

pub mod time;
