//! [`EmbeddedS3`]: an S3 server (`s3s-fs`) inside the hub, on its own loopback port, with an STS
//! `AssumeRole` endpoint and an access check confining temporary keys to `users/NAME/`.
//!
//! Layout under the data directory: `objects/` (one directory per bucket), `root-key` (the
//! hub's own key, created on first start, mode 0600) and `port` (with listen port 0: the port
//! picked the first time, taken again on the next start when free, so servers and kernels that
//! outlive a hub restart keep reaching the store at the endpoint they were given).

mod access;
mod confine;
mod keys;
mod store;
mod sts;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::access::PrefixAccess;
use self::keys::KeyRing;
use self::store::Store;
use self::sts::StsRoute;
use crate::Secret;
use crate::exchange::{Exchange, ExchangeError, user_prefix};
use crate::grant::{Grant, S3Credentials, Space};

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Where objects and the root key live.
    pub data_dir: PathBuf,
    /// Listen address (loopback; port 0 = any free port, the same one as last time when it is
    /// free).
    pub listen: SocketAddr,
    /// Region name handed to clients.
    pub region: String,
    /// The bucket holding users' prefixes (created at start).
    pub bucket: String,
    /// Longest lifetime of temporary credentials, seconds (at least 900).
    pub max_lifetime_secs: i64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".stackhub/s3"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: "local".to_owned(),
            bucket: "stackhub".to_owned(),
            max_lifetime_secs: 12 * 3600,
        }
    }
}

/// The embedded store could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A file or directory could not be created or read.
    #[error("embedded S3: cannot {what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listen address is taken or not local.
    #[error("embedded S3: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting is unusable.
    #[error("embedded S3: {0}")]
    Config(String),
}

/// A running embedded store. Dropping it does not stop it; call [`EmbeddedS3::shutdown`].
#[derive(Debug)]
pub struct EmbeddedS3 {
    endpoint: String,
    addr: SocketAddr,
    keys: KeyRing,
    config: EmbeddedConfig,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.to_owned();
    move |source| StartError::Io { what, path, source }
}

/// Listen on `config.listen`; with port 0, on the port of the last start (`data_dir/port`) when
/// it is free, else on any free port.
async fn bind(config: &EmbeddedConfig) -> Result<TcpListener, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: config.listen,
        source,
    };
    if config.listen.port() == 0 {
        let last = std::fs::read_to_string(config.data_dir.join("port"))
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .filter(|p| *p != 0);
        if let Some(port) = last {
            let addr = SocketAddr::new(config.listen.ip(), port);
            match TcpListener::bind(addr).await {
                Ok(l) => return Ok(l),
                Err(e) => tracing::warn!(
                    %addr, error = %e,
                    "embedded S3: last start's port is taken; servers started before now lose the store"
                ),
            }
        }
    }
    TcpListener::bind(config.listen).await.map_err(bind_error)
}

/// Load `path` (`ACCESS_KEY_ID:SECRET`) or create it with a fresh random key, mode 0600.
fn root_key(path: &Path) -> Result<KeyRing, StartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (id, secret) = text.trim().split_once(':').ok_or_else(|| {
                StartError::Config(format!("{} is not ACCESS_KEY_ID:SECRET", path.display()))
            })?;
            Ok(KeyRing::new(id.to_owned(), Secret::new(secret)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("STACKHUB{}", hex::encode_upper(rand::random::<[u8; 6]>()));
            let secret = hex::encode(rand::random::<[u8; 24]>());
            let tmp = path.with_extension("tmp");
            {
                use std::io::Write;
                #[cfg(unix)]
                use std::os::unix::fs::OpenOptionsExt;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                opts.mode(0o600);
                let mut f = opts.open(&tmp).map_err(io("create", &tmp))?;
                f.write_all(format!("{id}:{secret}\n").as_bytes())
                    .map_err(io("write", &tmp))?;
            }
            std::fs::rename(&tmp, path).map_err(io("create", path))?;
            Ok(KeyRing::new(id, Secret::new(secret)))
        }
        Err(e) => Err(io("read", path)(e)),
    }
}

impl EmbeddedS3 {
    /// Create the directories and the bucket, load or create the root key, and serve.
    ///
    /// # Errors
    /// [`StartError`] naming the directory, file or address.
    pub async fn start(config: EmbeddedConfig) -> Result<Self, StartError> {
        if config.max_lifetime_secs < 900 {
            return Err(StartError::Config(
                "max_lifetime_secs must be at least 900".to_owned(),
            ));
        }
        if !s3s::path::check_bucket_name(&config.bucket) {
            return Err(StartError::Config(format!(
                "{:?} is not a valid bucket name",
                config.bucket
            )));
        }
        if config.region.is_empty()
            || !config
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(StartError::Config(format!(
                "region {:?} must be lower-case letters, digits and `-`",
                config.region
            )));
        }
        let objects = config.data_dir.join("objects");
        let bucket_dir = objects.join(&config.bucket);
        std::fs::create_dir_all(&bucket_dir).map_err(io("create", &bucket_dir))?;
        let keys = root_key(&config.data_dir.join("root-key"))?;
        let fs = s3s_fs::FileSystem::new(&objects).map_err(|e| StartError::Io {
            what: "open",
            path: objects.clone(),
            source: std::io::Error::other(format!("{e:?}")),
        })?;
        // The tree as s3s-fs resolves it (canonical).
        let root = objects.canonicalize().map_err(io("open", &objects))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(Store { fs, root });
        builder.set_auth(keys.clone());
        builder.set_access(PrefixAccess::new(keys.clone()));
        builder.set_route(StsRoute {
            keys: keys.clone(),
            bucket: config.bucket.clone(),
            max_lifetime_secs: config.max_lifetime_secs,
        });
        let service = builder.build();

        let listener = bind(&config).await?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        if config.listen.port() == 0 {
            let path = config.data_dir.join("port");
            std::fs::write(&path, format!("{}\n", addr.port())).map_err(io("write", &path))?;
        }
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let http = Arc::new(ConnBuilder::new(TokioExecutor::new()));
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            loop {
                let socket = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((socket, _)) => socket,
                        Err(e) => {
                            tracing::warn!(error = %e, "embedded S3: accept failed");
                            continue;
                        }
                    },
                    _ = stopped.wait_for(|v| *v) => break,
                };
                let conn = http.serve_connection(TokioIo::new(socket), service.clone());
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            tokio::select! {
                () = graceful.shutdown() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        });
        let endpoint = format!("http://{addr}");
        tracing::info!(%endpoint, bucket = %config.bucket, "embedded S3 listening");
        Ok(Self {
            endpoint,
            addr,
            keys,
            config,
            stop,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The region clients should use.
    pub fn region(&self) -> &str {
        &self.config.region
    }

    /// The users' bucket.
    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// The root key's id (may do anything, including `AssumeRole`).
    pub fn root_access_key_id(&self) -> &str {
        self.keys.root_access_key_id()
    }

    /// The root key's secret.
    pub fn root_secret(&self) -> &Secret {
        self.keys.root_secret()
    }

    /// An exchange issuing credentials in-process (no STS round trip) that last
    /// `lifetime_secs` (at least 1, at most `max_lifetime_secs`).
    pub fn exchange(&self, lifetime_secs: i64) -> EmbeddedExchange {
        EmbeddedExchange {
            keys: self.keys.clone(),
            addr: self.addr,
            space: Space {
                endpoint: self.endpoint.clone(),
                region: self.config.region.clone(),
                bucket: self.config.bucket.clone(),
                prefix: String::new(),
            },
            lifetime_secs: lifetime_secs.clamp(1, self.config.max_lifetime_secs),
        }
    }

    /// Stop accepting, let open requests finish (at most 5 s).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Issues prefix-confined credentials of an [`EmbeddedS3`] in-process.
#[derive(Debug, Clone)]
pub struct EmbeddedExchange {
    keys: KeyRing,
    addr: SocketAddr,
    space: Space,
    lifetime_secs: i64,
}

#[async_trait]
impl Exchange for EmbeddedExchange {
    fn space(&self, user: &str) -> Result<Space, ExchangeError> {
        Ok(Space {
            prefix: user_prefix(user)?,
            ..self.space.clone()
        })
    }

    async fn provision(&self, user: &str) -> Result<Grant, ExchangeError> {
        let space = self.space(user)?;
        let issued = self.keys.issue(
            &space.bucket,
            &space.prefix,
            chrono::Duration::seconds(self.lifetime_secs),
        );
        Ok(Grant {
            space,
            credentials: S3Credentials {
                access_key_id: issued.access_key_id,
                secret_access_key: issued.secret_access_key,
                session_token: Some(issued.session_token),
                expires_at: Some(issued.expires_at),
            },
        })
    }

    async fn check(&self) -> Result<(), ExchangeError> {
        tokio::net::TcpStream::connect(self.addr)
            .await
            .map(|_| ())
            .map_err(|e| ExchangeError::Unreachable {
                endpoint: self.space.endpoint.clone(),
                reason: e.to_string(),
            })
    }
}
