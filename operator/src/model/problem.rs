//! Why an app cannot be built: user-facing problems, each mapped to a status
//! condition type and a CamelCase reason.
//!
//! Messages say what to fix. They name objects, keys and fields but never a
//! value read from a Secret or ConfigMap (nor a URL that may carry a password).

use std::fmt;

/// Status condition types that [`Problem`]s are reported under.
pub mod condition {
    /// The SpinAppExecutor (and its RuntimeClass) is usable.
    pub const EXECUTOR_READY: &str = "ExecutorReady";
    /// The runtime config is valid and rendered.
    pub const RUNTIME_CONFIG_READY: &str = "RuntimeConfigReady";
    /// Every referenced Secret/ConfigMap key exists.
    pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";
    /// The spec is consistent (checks CEL cannot do, or defence in depth).
    pub const SPEC_VALID: &str = "SpecValid";
    /// All of the above, in a stable order.
    pub const ALL: [&str; 4] = [
        EXECUTOR_READY,
        RUNTIME_CONFIG_READY,
        REFERENCES_RESOLVED,
        SPEC_VALID,
    ];
}

/// Type names in a runtime-config table, for messages.
pub(crate) fn join(items: &[&str]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// One reason the app cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    // ----- ExecutorReady -----
    /// `spec.executor` names no SpinAppExecutor in the app's namespace.
    MissingExecutor { executor: String, namespace: String },
    /// The executor's RuntimeClass does not exist.
    RuntimeClassNotFound {
        executor: String,
        runtime_class: String,
    },
    /// `createDeployment: true` without runtimeClassName or spinImage.
    ExecutorHasNoDeploymentConfig { executor: String },
    /// Both runtimeClassName and spinImage are set.
    ConflictingDeploymentConfig { executor: String },

    // ----- RuntimeConfigReady -----
    /// A store/database/LLM type Spindle does not know.
    UnknownStoreType {
        location: String,
        type_: String,
        known: Vec<&'static str>,
    },
    /// An option the type does not accept (spin-operator#181: `token` vs `auth_token`).
    UnknownOption {
        location: String,
        type_: String,
        option: String,
        allowed: Vec<&'static str>,
    },
    /// A required option is missing.
    MissingOption {
        location: String,
        type_: String,
        option: &'static str,
    },
    /// Options that only work as a pair were given alone.
    IncompleteOptions {
        location: String,
        type_: String,
        options: [&'static str; 2],
    },
    /// The same option name twice in one table.
    DuplicateOption { location: String, option: String },
    /// Two stores/databases with the same name.
    DuplicateStoreName { location: String },
    /// A redis `url` that is not a `redis://` or `rediss://` URL.
    InvalidRedisUrl { location: String, detail: String },
    /// An option value of the wrong form (never echoes the value).
    InvalidOptionValue {
        location: String,
        option: String,
        expected: &'static str,
    },

    // ----- ReferencesResolved -----
    /// A referenced Secret does not exist.
    SecretNotFound { name: String, used_by: String },
    /// A referenced Secret lacks the key.
    SecretKeyNotFound {
        name: String,
        key: String,
        used_by: String,
    },
    /// A referenced ConfigMap does not exist.
    ConfigMapNotFound { name: String, used_by: String },
    /// A referenced ConfigMap lacks the key.
    ConfigMapKeyNotFound {
        name: String,
        key: String,
        used_by: String,
    },

    // ----- SpecValid -----
    /// Metadata the apiserver always sets is missing (name, namespace, uid).
    IncompleteMetadata { field: &'static str },
    /// `spec.image` is empty.
    InvalidImage,
    /// `spec.replicas` is negative.
    InvalidReplicas { replicas: i32 },
    /// `spec.replicas` set together with `enableAutoscaling: true`.
    ReplicasWithAutoscaling,
    /// `spec.port` outside 1..=65535.
    InvalidPort { port: i32 },
    /// A quantity that does not parse.
    InvalidQuantity {
        field: String,
        value: String,
        detail: String,
    },
    /// `invocationLimits.memory` above the container's memory limit/request.
    InvocationMemoryExceedsLimit {
        invocation: String,
        bound_field: &'static str,
        bound: String,
    },
    /// deployment/pod annotations with an executor that creates no Deployment.
    AnnotationsWithoutDeployment {
        executor: String,
        fields: Vec<&'static str>,
    },
    /// A user volume (or mount) named `spin-*`.
    ReservedVolumeName { field: &'static str, name: String },
    /// A user mount at a path Spindle mounts.
    ReservedMountPath { path: String },
    /// A pod label under `core.spinkube.dev/`.
    ReservedPodLabel { key: String },
    /// A pod annotation Spindle sets itself.
    ReservedPodAnnotation { key: String },
    /// A variable name that cannot become `SPIN_VARIABLE_<NAME>`.
    InvalidVariableName { name: String },
    /// Two variables that map to the same environment variable.
    DuplicateVariable { name: String },
    /// A variable with both value and valueFrom.
    InvalidVariable { name: String },
    /// A component id that is empty or contains a comma.
    InvalidComponentName { name: String },
    /// A reference with an empty name, or neither/both of its alternatives.
    InvalidReference {
        used_by: String,
        detail: &'static str,
    },
}

impl Problem {
    /// The status condition type this problem is reported under.
    pub fn condition_type(&self) -> &'static str {
        use Problem::*;
        match self {
            MissingExecutor { .. }
            | RuntimeClassNotFound { .. }
            | ExecutorHasNoDeploymentConfig { .. }
            | ConflictingDeploymentConfig { .. } => condition::EXECUTOR_READY,
            UnknownStoreType { .. }
            | UnknownOption { .. }
            | MissingOption { .. }
            | IncompleteOptions { .. }
            | DuplicateOption { .. }
            | DuplicateStoreName { .. }
            | InvalidRedisUrl { .. }
            | InvalidOptionValue { .. } => condition::RUNTIME_CONFIG_READY,
            SecretNotFound { .. }
            | SecretKeyNotFound { .. }
            | ConfigMapNotFound { .. }
            | ConfigMapKeyNotFound { .. } => condition::REFERENCES_RESOLVED,
            IncompleteMetadata { .. }
            | InvalidImage
            | InvalidReplicas { .. }
            | ReplicasWithAutoscaling
            | InvalidPort { .. }
            | InvalidQuantity { .. }
            | InvocationMemoryExceedsLimit { .. }
            | AnnotationsWithoutDeployment { .. }
            | ReservedVolumeName { .. }
            | ReservedMountPath { .. }
            | ReservedPodLabel { .. }
            | ReservedPodAnnotation { .. }
            | InvalidVariableName { .. }
            | DuplicateVariable { .. }
            | InvalidVariable { .. }
            | InvalidComponentName { .. }
            | InvalidReference { .. } => condition::SPEC_VALID,
        }
    }

    /// CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        use Problem::*;
        match self {
            MissingExecutor { .. } => "MissingExecutor",
            RuntimeClassNotFound { .. } => "RuntimeClassNotFound",
            ExecutorHasNoDeploymentConfig { .. } => "ExecutorHasNoDeploymentConfig",
            ConflictingDeploymentConfig { .. } => "ConflictingDeploymentConfig",
            UnknownStoreType { .. } => "UnknownStoreType",
            UnknownOption { .. } => "UnknownOption",
            MissingOption { .. } => "MissingOption",
            IncompleteOptions { .. } => "IncompleteOptions",
            DuplicateOption { .. } => "DuplicateOption",
            DuplicateStoreName { .. } => "DuplicateStoreName",
            InvalidRedisUrl { .. } => "InvalidRedisUrl",
            InvalidOptionValue { .. } => "InvalidOptionValue",
            SecretNotFound { .. } => "SecretNotFound",
            SecretKeyNotFound { .. } => "SecretKeyNotFound",
            ConfigMapNotFound { .. } => "ConfigMapNotFound",
            ConfigMapKeyNotFound { .. } => "ConfigMapKeyNotFound",
            IncompleteMetadata { .. } => "IncompleteMetadata",
            InvalidImage => "InvalidImage",
            InvalidReplicas { .. } => "InvalidReplicas",
            ReplicasWithAutoscaling => "ReplicasWithAutoscaling",
            InvalidPort { .. } => "InvalidPort",
            InvalidQuantity { .. } => "InvalidQuantity",
            InvocationMemoryExceedsLimit { .. } => "InvocationMemoryExceedsLimit",
            AnnotationsWithoutDeployment { .. } => "AnnotationsWithoutDeployment",
            ReservedVolumeName { .. } => "ReservedVolumeName",
            ReservedMountPath { .. } => "ReservedMountPath",
            ReservedPodLabel { .. } => "ReservedPodLabel",
            ReservedPodAnnotation { .. } => "ReservedPodAnnotation",
            InvalidVariableName { .. } => "InvalidVariableName",
            DuplicateVariable { .. } => "DuplicateVariable",
            InvalidVariable { .. } => "InvalidVariable",
            InvalidComponentName { .. } => "InvalidComponentName",
            InvalidReference { .. } => "InvalidReference",
        }
    }

    /// What is wrong and how to fix it. Never contains a Secret/ConfigMap value.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// True when waiting may fix it: an object that may be created later.
    /// The controller should then requeue (and watch) rather than give up.
    pub fn is_transient(&self) -> bool {
        use Problem::*;
        matches!(
            self,
            MissingExecutor { .. }
                | RuntimeClassNotFound { .. }
                | SecretNotFound { .. }
                | SecretKeyNotFound { .. }
                | ConfigMapNotFound { .. }
                | ConfigMapKeyNotFound { .. }
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        match self {
            MissingExecutor {
                executor,
                namespace,
            } => write!(
                f,
                "SpinAppExecutor {executor:?} does not exist in namespace {namespace:?}; create it there or set spec.executor to an existing executor"
            ),
            RuntimeClassNotFound {
                executor,
                runtime_class,
            } => write!(
                f,
                "RuntimeClass {runtime_class:?} (from SpinAppExecutor {executor:?}) does not exist; install containerd-shim-spin and its RuntimeClass, or fix the executor's deploymentConfig.runtimeClassName"
            ),
            ExecutorHasNoDeploymentConfig { executor } => write!(
                f,
                "SpinAppExecutor {executor:?} has createDeployment: true but no deploymentConfig; set deploymentConfig.runtimeClassName (shim) or deploymentConfig.spinImage"
            ),
            ConflictingDeploymentConfig { executor } => write!(
                f,
                "SpinAppExecutor {executor:?} sets both deploymentConfig.runtimeClassName and deploymentConfig.spinImage; keep exactly one"
            ),
            UnknownStoreType {
                location,
                type_,
                known,
            } => write!(
                f,
                "runtimeConfig.{location}: unknown type {type_:?}; known types: {}",
                join(known)
            ),
            UnknownOption {
                location,
                type_,
                option,
                allowed,
            } => write!(
                f,
                "runtimeConfig.{location}: type {type_:?} has no option {option:?}; allowed options: {}",
                join(allowed)
            ),
            MissingOption {
                location,
                type_,
                option,
            } => write!(
                f,
                "runtimeConfig.{location}: type {type_:?} requires option {option:?}"
            ),
            IncompleteOptions {
                location,
                type_,
                options: [a, b],
            } => write!(
                f,
                "runtimeConfig.{location}: type {type_:?} needs options {a:?} and {b:?} together, or neither"
            ),
            DuplicateOption { location, option } => {
                write!(
                    f,
                    "runtimeConfig.{location}: option {option:?} is given more than once"
                )
            }
            DuplicateStoreName { location } => {
                write!(
                    f,
                    "runtimeConfig.{location}: the name is used more than once; names must be unique"
                )
            }
            InvalidRedisUrl { location, detail } => write!(
                f,
                "runtimeConfig.{location}: option \"url\" must be a redis:// or rediss:// URL with a host ({detail})"
            ),
            InvalidOptionValue {
                location,
                option,
                expected,
            } => {
                write!(
                    f,
                    "runtimeConfig.{location}: option {option:?} must be {expected}"
                )
            }
            SecretNotFound { name, used_by } => {
                write!(
                    f,
                    "Secret {name:?} (referenced by {used_by}) does not exist in the app's namespace"
                )
            }
            SecretKeyNotFound { name, key, used_by } => {
                write!(
                    f,
                    "Secret {name:?} has no key {key:?} (referenced by {used_by})"
                )
            }
            ConfigMapNotFound { name, used_by } => {
                write!(
                    f,
                    "ConfigMap {name:?} (referenced by {used_by}) does not exist in the app's namespace"
                )
            }
            ConfigMapKeyNotFound { name, key, used_by } => {
                write!(
                    f,
                    "ConfigMap {name:?} has no key {key:?} (referenced by {used_by})"
                )
            }
            IncompleteMetadata { field } => {
                write!(
                    f,
                    "the SpinApp has no metadata.{field}; it must be read from the API server"
                )
            }
            InvalidImage => write!(
                f,
                "spec.image is empty; set it to the app's OCI reference, e.g. ghcr.io/org/app:v1"
            ),
            InvalidReplicas { replicas } => {
                write!(f, "spec.replicas is {replicas}; it must be 0 or more")
            }
            ReplicasWithAutoscaling => write!(
                f,
                "spec.replicas must not be set when spec.enableAutoscaling is true; remove one of them"
            ),
            InvalidPort { port } => {
                write!(f, "spec.port is {port}; it must be between 1 and 65535")
            }
            InvalidQuantity {
                field,
                value,
                detail,
            } => {
                write!(
                    f,
                    "{field}: {value:?} is not a valid quantity ({detail}); use e.g. 64Mi, 1Gi or 512M"
                )
            }
            InvocationMemoryExceedsLimit {
                invocation,
                bound_field,
                bound,
            } => write!(
                f,
                "spec.invocationLimits.memory ({invocation}) exceeds spec.{bound_field} ({bound}); lower it or raise the container memory"
            ),
            AnnotationsWithoutDeployment { executor, fields } => write!(
                f,
                "spec.{} set, but SpinAppExecutor {executor:?} has createDeployment: false so there is no Deployment or pod to annotate; remove them",
                fields.join(" and spec.")
            ),
            ReservedVolumeName { field, name } => write!(
                f,
                "spec.{field}: name {name:?} starts with \"spin-\", which is reserved for Spindle's own volumes; rename it"
            ),
            ReservedMountPath { path } => write!(
                f,
                "spec.volumeMounts: mountPath {path:?} is where Spindle mounts its own files; use another path"
            ),
            ReservedPodLabel { key } => write!(
                f,
                "spec.podLabels: key {key:?} uses the core.spinkube.dev/ prefix, which Spindle uses for selectors; rename it"
            ),
            ReservedPodAnnotation { key } => {
                write!(
                    f,
                    "spec.podAnnotations: key {key:?} is set by Spindle; remove it"
                )
            }
            InvalidVariableName { name } => write!(
                f,
                "spec.variables: name {name:?} must start with a letter and contain only letters, digits and '_'"
            ),
            DuplicateVariable { name } => write!(
                f,
                "spec.variables: {name:?} is given more than once (names are compared case-insensitively)"
            ),
            InvalidVariable { name } => {
                write!(
                    f,
                    "spec.variables: {name:?} sets both value and valueFrom; keep one"
                )
            }
            InvalidComponentName { name } => {
                write!(
                    f,
                    "spec.components: {name:?} is not a component id (empty or contains ',')"
                )
            }
            InvalidReference { used_by, detail } => write!(f, "{used_by}: {detail}"),
        }
    }
}

impl std::error::Error for Problem {}

/// A non-empty list of problems: why [`super::App::build`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.summary())]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Problems holding one problem.
    pub fn new(first: Problem) -> Self {
        Self(vec![first])
    }

    /// Problems from a list; `None` when the list is empty.
    pub fn from_vec(problems: Vec<Problem>) -> Option<Self> {
        if problems.is_empty() {
            None
        } else {
            Some(Self(problems))
        }
    }

    /// The first problem (there always is one).
    pub fn first(&self) -> &Problem {
        &self.0[0]
    }

    /// All problems, in the order found.
    pub fn as_slice(&self) -> &[Problem] {
        &self.0
    }

    /// All problems, in the order found.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// The problems.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    /// The problems reported under one condition type.
    pub fn for_condition<'a>(
        &'a self,
        condition_type: &'a str,
    ) -> impl Iterator<Item = &'a Problem> + 'a {
        self.0
            .iter()
            .filter(move |p| p.condition_type() == condition_type)
    }

    /// True when every problem may go away by waiting (requeue rather than give up).
    pub fn is_transient(&self) -> bool {
        self.0.iter().all(Problem::is_transient)
    }

    /// All messages joined with "; ".
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(Problem::message)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_never_empty() {
        assert_eq!(Problems::from_vec(vec![]), None);
        let p = Problems::from_vec(vec![Problem::InvalidImage]).expect("non-empty");
        assert_eq!(p.first(), &Problem::InvalidImage);
    }

    #[test]
    fn transient_only_when_all_are() {
        let missing = Problem::SecretNotFound {
            name: "s".into(),
            used_by: "x".into(),
        };
        let p = Problems::from_vec(vec![missing.clone()]).expect("non-empty");
        assert!(p.is_transient());
        let p = Problems::from_vec(vec![missing, Problem::InvalidImage]).expect("non-empty");
        assert!(!p.is_transient());
        assert_eq!(p.for_condition(condition::SPEC_VALID).count(), 1);
        assert_eq!(p.for_condition(condition::REFERENCES_RESOLVED).count(), 1);
        assert_eq!(
            p.summary(),
            format!("{}; {}", p.as_slice()[0], p.as_slice()[1])
        );
    }

    #[test]
    fn reasons_are_camel_case_and_conditions_known() {
        let samples = [
            Problem::MissingExecutor {
                executor: "e".into(),
                namespace: "n".into(),
            },
            Problem::UnknownStoreType {
                location: "l".into(),
                type_: "t".into(),
                known: vec!["a"],
            },
            Problem::ConfigMapKeyNotFound {
                name: "c".into(),
                key: "k".into(),
                used_by: "u".into(),
            },
            Problem::InvocationMemoryExceedsLimit {
                invocation: "1Gi".into(),
                bound_field: "resources.limits.memory",
                bound: "64Mi".into(),
            },
        ];
        for p in samples {
            let r = p.reason();
            assert!(
                r.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{r}"
            );
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
            assert!(condition::ALL.contains(&p.condition_type()));
            assert!(!p.message().is_empty());
        }
    }
}
