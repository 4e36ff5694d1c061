//! The stackhub hub: users, servers, tokens, OAuth and the JupyterHub-compatible REST API.
//!
//! Built in the hub core issue; the workspace lays the crate out so later work has a home.
