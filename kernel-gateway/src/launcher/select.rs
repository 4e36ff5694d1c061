//! [`ByKernelSpec`]: one launcher per kernelspec, chosen by `metadata.stackhub.launcher`
//! (`"slurm"`, ...); kernelspecs without it use the default (local) launcher.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{
    DaskLauncherOf, IsLive, LaunchError, LaunchRequest, Launched, Launcher, Progress, Recovered,
};

/// Dispatches launches by kernelspec; see the module docs.
#[derive(Debug, Clone)]
pub struct ByKernelSpec {
    default: Arc<dyn Launcher>,
    named: BTreeMap<String, Arc<dyn Launcher>>,
}

impl ByKernelSpec {
    /// Every kernelspec goes to `default` until [`ByKernelSpec::with`] adds named launchers.
    pub fn new(default: Arc<dyn Launcher>) -> Self {
        ByKernelSpec {
            default,
            named: BTreeMap::new(),
        }
    }

    /// Kernelspecs with `metadata.stackhub.launcher == name` go to `launcher`.
    pub fn with(mut self, name: impl Into<String>, launcher: Arc<dyn Launcher>) -> Self {
        self.named.insert(name.into(), launcher);
        self
    }

    /// Each launcher once (the default may also be registered by name).
    fn distinct(&self) -> Vec<&Arc<dyn Launcher>> {
        let mut out = vec![&self.default];
        for l in self.named.values() {
            if !out.iter().any(|o| Arc::ptr_eq(o, l)) {
                out.push(l);
            }
        }
        out
    }

    fn pick(&self, request: &LaunchRequest) -> Result<&Arc<dyn Launcher>, LaunchError> {
        match request.spec.launcher_name() {
            None => Ok(&self.default),
            Some(name) => self.named.get(name).ok_or_else(|| LaunchError::Scheduler {
                what: "launcher",
                detail: format!(
                    "kernelspec {} asks for launcher {name:?}, which this gateway does not run \
                     (configured: {:?})",
                    request.spec.name,
                    self.named.keys().collect::<Vec<_>>()
                ),
            }),
        }
    }
}

impl Launcher for ByKernelSpec {
    fn launch(&self, request: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        match self.pick(&request) {
            Ok(l) => l.launch(request),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn launch_with_progress(
        &self,
        request: LaunchRequest,
        progress: Progress,
    ) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        match self.pick(&request) {
            Ok(l) => l.launch_with_progress(request, progress),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn recover(&self) -> BoxFuture<'_, Vec<Recovered>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for l in self.distinct() {
                out.extend(l.recover().await);
            }
            out
        })
    }

    fn remove_orphans<'a>(
        &'a self,
        is_live: &'a IsLive<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, LaunchError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for l in self.distinct() {
                out.extend(l.remove_orphans(is_live).await?);
            }
            Ok(out)
        })
    }

    fn dask_launcher(&self, name: &str, config: &crate::dask::DaskConfig) -> DaskLauncherOf {
        self.named.get(name)?.dask_launcher(name, config)
    }
}
