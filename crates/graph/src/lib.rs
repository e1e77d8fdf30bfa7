//! The Graph API client (work in progress).
