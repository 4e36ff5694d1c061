//! Spawners: start and stop single-user JupyterLab servers (local processes, Kubernetes pods).
//!
//! Built in the hub core issue; the workspace lays the crate out so later work has a home.
