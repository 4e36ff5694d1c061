//! Embedded migrations: `migrations/sqlite/*.sql` and `migrations/postgres/*.sql`, applied by
//! sqlx's migrator (tracked in `_sqlx_migrations`). Add a migration to both directories. On
//! PostgreSQL every table carries the change feed's trigger (`0006_change_feed.sql`): a migration
//! that adds a table adds the trigger to it (`hub/tests/db.rs` checks).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use super::{Backend, Db};

/// (version, description, SQLite SQL, PostgreSQL SQL).
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "oidc quota",
        include_str!("../../migrations/sqlite/0002_oidc_quota.sql"),
        include_str!("../../migrations/postgres/0002_oidc_quota.sql"),
    ),
    (
        3,
        "identity binding",
        include_str!("../../migrations/sqlite/0003_identity_binding.sql"),
        include_str!("../../migrations/postgres/0003_identity_binding.sql"),
    ),
    (
        4,
        "server launch",
        include_str!("../../migrations/sqlite/0004_server_launch.sql"),
        include_str!("../../migrations/postgres/0004_server_launch.sql"),
    ),
    (
        5,
        "shares",
        include_str!("../../migrations/sqlite/0005_shares.sql"),
        include_str!("../../migrations/postgres/0005_shares.sql"),
    ),
    (
        6,
        "change feed",
        include_str!("../../migrations/sqlite/0006_change_feed.sql"),
        include_str!("../../migrations/postgres/0006_change_feed.sql"),
    ),
    (
        7,
        "site health",
        include_str!("../../migrations/sqlite/0007_site_health.sql"),
        include_str!("../../migrations/postgres/0007_site_health.sql"),
    ),
    (
        8,
        "spawn leases",
        include_str!("../../migrations/sqlite/0008_spawn_leases.sql"),
        include_str!("../../migrations/postgres/0008_spawn_leases.sql"),
    ),
    (
        9,
        "site dask health",
        include_str!("../../migrations/sqlite/0009_site_dask_health.sql"),
        include_str!("../../migrations/postgres/0009_site_dask_health.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(Backend);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, desc, sqlite, pg)| {
                let sql = if self.0 == Backend::Sqlite {
                    sqlite
                } else {
                    pg
                };
                Migration::new(
                    *version,
                    Cow::Borrowed(*desc),
                    MigrationType::Simple,
                    Cow::Borrowed(*sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

pub(super) async fn run(db: &Db) -> Result<(), MigrateError> {
    let migrator = Migrator::new(Embedded(db.backend)).await?;
    migrator.run(db.pool()).await
}
