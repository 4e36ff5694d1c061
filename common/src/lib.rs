//! Pieces the hub, the kernel gateway, the proxy and the S3 exchange share, kept here once so
//! that they cannot drift apart:
//!
//! - [`quantity`]: Kubernetes quantities (`2Gi`, `1e9`, `500m`) parsed exactly, with
//!   [`parse_memory`] and [`parse_cpus`] for the two uses the crates have;
//! - [`quota`]: the `[[quotas]]` / `[[quota_roles]]` table ([`QuotaRole`]), its validation and
//!   "the highest row a user holds" ([`quota::highest_held`]);
//! - [`groups`]: whether a held group (hub name `projects:eo-lab`, identity-provider path
//!   `/projects/eo-lab`) is the group a rule names ([`groups::group_matches`]);
//! - [`path`]: whether the rest of a forwarded URL path stays where it is sent;
//! - [`Secret`]: a string that `Debug` never prints;
//! - `shutdown_signal()` (feature `signal`): SIGINT or SIGTERM, for the binaries' `main`.
//!
//! Nothing here knows about HTTP, databases or the crates that use it.

pub mod groups;
pub mod path;
pub mod quantity;
pub mod quota;
mod secret;
#[cfg(feature = "signal")]
mod signal;

pub use self::quantity::{Quantity, QuantityError, parse_cpus, parse_memory};
pub use self::quota::QuotaRole;
pub use self::secret::Secret;
#[cfg(feature = "signal")]
pub use self::signal::{ShutdownSignal, shutdown_signal};
