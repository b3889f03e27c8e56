//! The SpinApp and SpinAppExecutor controllers against a real kube-apiserver
//! (+ kube-controller-manager, kube-scheduler and kwok for rollouts and
//! garbage collection). One test binary; each module is one behaviour.
//!
//! Needs `SPINDLE_TEST_KUBECONFIG` (run `e2e/scripts/test.sh`, or
//! `e2e/scripts/controlplane.sh start` and `source <(e2e/scripts/controlplane.sh env)`).

#[path = "reconciler/ca_bundle.rs"]
mod ca_bundle;
#[path = "reconciler/common.rs"]
mod common;
#[path = "reconciler/idempotency.rs"]
mod idempotency;
#[path = "reconciler/leader.rs"]
mod leader;
#[path = "reconciler/lease.rs"]
mod lease;
#[path = "reconciler/lifecycle.rs"]
mod lifecycle;
#[path = "reconciler/problems.rs"]
mod problems;
#[path = "reconciler/references.rs"]
mod references;
#[path = "reconciler/rollout.rs"]
mod rollout;
#[path = "reconciler/startup.rs"]
mod startup;
#[path = "reconciler/table.rs"]
mod table;
