//! Test fixtures shared by the model and render tests.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{App, Inputs, Problems};
use crate::api::{
    ExecutorDeploymentConfig, SpinApp, SpinAppExecutor, SpinAppExecutorSpec, SpinAppSpec,
};

/// A SpinApp as read from the apiserver: name, namespace, uid, generation set.
pub(crate) fn spin_app(name: &str, spec: SpinAppSpec) -> SpinApp {
    let mut app = SpinApp::new(name, spec);
    app.metadata.namespace = Some("apps".into());
    app.metadata.uid = Some("uid-1234".into());
    app.metadata.generation = Some(3);
    app
}

/// The smallest valid spec.
pub(crate) fn spec(image: &str) -> SpinAppSpec {
    SpinAppSpec {
        executor: "containerd-shim-spin".into(),
        image: image.into(),
        ..Default::default()
    }
}

fn executor(spec: SpinAppExecutorSpec) -> SpinAppExecutor {
    let mut e = SpinAppExecutor::new("containerd-shim-spin", spec);
    e.metadata.namespace = Some("apps".into());
    e
}

/// The shim executor (runtimeClassName `wasmtime-spin-v2`).
pub(crate) fn shim_executor() -> SpinAppExecutor {
    executor(SpinAppExecutorSpec {
        create_deployment: true,
        deployment_config: Some(ExecutorDeploymentConfig {
            runtime_class_name: Some("wasmtime-spin-v2".into()),
            ..Default::default()
        }),
    })
}

/// A spintainer executor.
pub(crate) fn spintainer_executor() -> SpinAppExecutor {
    executor(SpinAppExecutorSpec {
        create_deployment: true,
        deployment_config: Some(ExecutorDeploymentConfig {
            spin_image: Some("ghcr.io/fermyon/spin:v3.6.3".into()),
            ..Default::default()
        }),
    })
}

/// An executor with `createDeployment: false`.
pub(crate) fn no_deployment_executor() -> SpinAppExecutor {
    executor(SpinAppExecutorSpec {
        create_deployment: false,
        deployment_config: None,
    })
}

/// A Secret with `data`.
pub(crate) fn secret(pairs: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta::default(),
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A ConfigMap with `data`.
pub(crate) fn config_map(pairs: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Everything [`App::build`] reads, owned.
pub(crate) struct World {
    pub app: SpinApp,
    pub executor: Option<SpinAppExecutor>,
    pub runtime_class_exists: Option<bool>,
    pub secrets: BTreeMap<String, Secret>,
    pub config_maps: BTreeMap<String, ConfigMap>,
}

impl World {
    /// `app` run by the shim executor, whose RuntimeClass exists.
    pub fn new(app: SpinApp) -> Self {
        Self {
            app,
            executor: Some(shim_executor()),
            runtime_class_exists: Some(true),
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
        }
    }

    pub fn executor(mut self, executor: Option<SpinAppExecutor>) -> Self {
        self.executor = executor;
        self
    }

    pub fn secret(mut self, name: &str, secret: Secret) -> Self {
        self.secrets.insert(name.into(), secret);
        self
    }

    pub fn config_map(mut self, name: &str, cm: ConfigMap) -> Self {
        self.config_maps.insert(name.into(), cm);
        self
    }

    pub fn build(&self) -> Result<App, Problems> {
        App::build(&Inputs {
            app: &self.app,
            executor: self.executor.as_ref(),
            runtime_class_exists: self.runtime_class_exists,
            secrets: &self.secrets,
            config_maps: &self.config_maps,
        })
    }

    /// Builds, failing the test with the problems if any.
    pub fn app(&self) -> App {
        match self.build() {
            Ok(app) => app,
            Err(problems) => panic!("unexpected problems: {problems}"),
        }
    }

    /// Builds, failing the test if it succeeds.
    pub fn problems(&self) -> Vec<super::Problem> {
        match self.build() {
            Ok(app) => panic!("expected problems, built {app:?}"),
            Err(problems) => problems.into_vec(),
        }
    }
}
