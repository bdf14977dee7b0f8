//! Throwaway servers and conformance scenarios for connector tests.
