//! PostgreSQL connector (in progress).
