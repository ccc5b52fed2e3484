//! End-to-end tests of the CRM suite live in `e2e/` (one test binary).
